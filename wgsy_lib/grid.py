"""The LoRA grid: one 03_train papermill run per cell, resumable, on CPU, GPUs or Slurm.

A grid file (params/grid.yaml) has:

    output_dir: outputs/grid/NAME   # each cell runs in output_dir/<cell name>
    base: {...}                     # 03_train parameters shared by every cell
    axes: {r: [4, 8, 16], lora_dropout: [0.1, 0.2, 0.3]}   # any 03_train parameter; the grid is their product
    slurm: {...}                    # optional submitit parameters (slurm_partition, timeout_min, ...)

Each cell gets a resolved parameter file (`03_train.params.yaml` in its run directory, the file
`papermill -f` reads), its executed notebook, its log and `cell_status.json` with the exit status.
A cell is done when it exited 0 and its adapter and metrics.json exist. Done cells are skipped on
a rerun, and an unfinished cell resumes from its last checkpoint. A failing cell does not stop the others.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Queue
from typing import Any, Mapping

import yaml

from .config import read_yaml_mapping
from .errors import ConfigError, WgsyError
from .log import log_written
from .paths import resolve_path

logger = logging.getLogger(__name__)

STAGE = "03_train"
GRID_KEYS = ("output_dir", "base", "axes", "slurm")
EXECUTORS = ("local", "submitit-local", "slurm")
STATUS_FILE = "cell_status.json"
LEADERBOARD_FILE = "leaderboard.csv"
NOTEBOOK_FILE = f"{STAGE}.ipynb"
PARAMS_FILE = f"{STAGE}.params.yaml"
# Exception lines in a papermill log ("ConfigError: 03_train: invalid parameter(s) ...").


@dataclass(frozen=True)
class GridSpec:
    """A parsed grid file."""

    source: Path
    output_dir: Path
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    slurm: dict[str, Any]


@dataclass(frozen=True)
class GridCell:
    """One point of the grid: its name, its axis values and its resolved 03_train parameters."""

    name: str
    axis_values: dict[str, Any]
    parameters: dict[str, Any]
    run_dir: Path

    @property
    def notebook(self) -> Path:
        return self.run_dir / NOTEBOOK_FILE

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{STAGE}.log"


@dataclass
class CellResult:
    """The outcome of one cell: done, skipped (already done), failed or invalid."""

    name: str
    status: str
    returncode: int | None
    seconds: float
    error: str
    notebook: str
    log: str


def load_grid(path: str | Path) -> GridSpec:
    """Read and check a grid file; raise ConfigError naming the key at fault."""
    resolved, data = read_yaml_mapping(path, "grid file", expected=f"a mapping with keys {', '.join(GRID_KEYS)}")
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"grid file {resolved}: unknown key(s) {unknown}; the keys are {', '.join(GRID_KEYS)}")
    if not data.get("output_dir"):
        raise ConfigError(f"grid file {resolved}: output_dir is required (the folder that holds one run per cell)")

    base = data.get("base") or {}
    axes = data.get("axes") or {}
    if not isinstance(base, dict) or not isinstance(axes, dict):
        raise ConfigError(f"grid file {resolved}: 'base' and 'axes' must be mappings of 03_train parameters")
    _check_axes(axes, base, resolved)
    slurm = data.get("slurm") or {}
    return GridSpec(resolved, resolve_path(data["output_dir"]), dict(base), {k: list(v) for k, v in axes.items()},
                    dict(slurm))


def _check_axes(axes: Mapping[str, Any], base: Mapping[str, Any], source: Path) -> None:
    from .training import TrainConfig

    known = set(TrainConfig.model_fields)
    for name, values in axes.items():
        if name not in known:
            raise ConfigError(f"grid file {source}: axis {name!r} is not a 03_train parameter; the parameters are "
                              f"{', '.join(TrainConfig.model_fields)}")
        if name == "output_dir":
            raise ConfigError(f"grid file {source}: output_dir cannot be an axis; each cell's run directory is "
                              "output_dir/<cell name>")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid file {source}: axis {name!r} must be a non-empty list of values, got {values!r}")
        if name in base:
            raise ConfigError(f"grid file {source}: {name!r} is both in base and an axis; remove it from base")
    for name in base:
        if name not in known:
            raise ConfigError(f"grid file {source}: base parameter {name!r} is not a 03_train parameter")
    if "output_dir" in base:
        raise ConfigError(f"grid file {source}: set output_dir at the top level, not in base; each cell runs in "
                          "output_dir/<cell name>")


def expand_cells(spec: GridSpec) -> list[GridCell]:
    """Return every cell of the grid (the product of the axes), with its resolved parameters."""
    names = list(spec.axes)
    cells = []
    for combination in itertools.product(*(spec.axes[name] for name in names)):
        axis_values = dict(zip(names, combination))
        cell_name = cell_name_for(axis_values, spec.axes)
        run_dir = spec.output_dir / cell_name
        parameters = {**spec.base, **axis_values, "output_dir": str(run_dir)}
        cells.append(GridCell(cell_name, axis_values, parameters, run_dir))
    return cells


def cell_name_for(axis_values: Mapping[str, Any], axes: Mapping[str, list[Any]]) -> str:
    """Return a folder name such as "r16-lora_dropout0.1"; lists and long values use their index."""
    if not axis_values:
        return "single"
    parts = []
    for name, value in axis_values.items():
        text = str(value)
        if isinstance(value, (list, dict)) or not re.fullmatch(r"[\w.+-]{1,24}", text):
            text = f"#{axes[name].index(value)}"
        parts.append(f"{name}{text}")
    return "-".join(parts).replace("#", "i")


def write_cell_parameters(cell: GridCell) -> Path:
    """Write the cell's resolved parameter file, the file `papermill -f` takes."""
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    path = cell.run_dir / PARAMS_FILE
    path.write_text(yaml.safe_dump(cell.parameters, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def is_cell_done(run_dir: Path) -> bool:
    """Return True when the cell's last run exited 0 and its adapter and validation metrics exist."""
    from .training import is_run_done

    status_file = run_dir / STATUS_FILE
    if not status_file.is_file():
        return False
    try:
        status = json.loads(status_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return status.get("returncode") == 0 and is_run_done(run_dir)


def run_grid(spec: GridSpec, *, executor: str = "local", only: list[str] | None = None,
             env: Mapping[str, str] | None = None, cell_env: Mapping[str, Mapping[str, str]] | None = None,
             timeout_s: float | None = None) -> list[CellResult]:
    """Run every cell that is not done yet and write the leaderboard; return one result per cell.

    `cell_env` adds environment variables for named cells (the tests use it to crash one cell).
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is invalid; expected one of {', '.join(EXECUTORS)}")
    cells = _select(expand_cells(spec), only)
    results: dict[str, CellResult] = {}
    pending = []
    for cell in cells:
        write_cell_parameters(cell)
        if is_cell_done(cell.run_dir):
            logger.info("cell %s: done already, skipped", cell.name)
            results[cell.name] = CellResult(cell.name, "skipped", 0, 0.0, "", str(cell.notebook), str(cell.log_file))
            continue
        problem = _validate(cell)
        if problem:
            logger.error("cell %s: invalid parameters, not run:\n%s", cell.name, problem)
            results[cell.name] = CellResult(cell.name, "invalid", None, 0.0, problem, "", "")
            continue
        pending.append(cell)

    envs = {cell.name: {**dict(env or {}), **dict((cell_env or {}).get(cell.name, {}))} for cell in pending}
    logger.info("grid %s: %d cell(s), %d to run, executor %s", spec.source, len(cells), len(pending), executor)
    if executor == "local":
        finished = _run_local(pending, envs, timeout_s)
    else:
        finished = _run_submitit(pending, envs, spec, cluster="local" if executor == "submitit-local" else "slurm",
                                 timeout_s=timeout_s)
    results.update({result.name: result for result in finished})

    ordered = [results[cell.name] for cell in cells]
    write_leaderboard(spec.output_dir, cells=expand_cells(spec))
    _log_summary(ordered)
    return ordered


def _select(cells: list[GridCell], only: list[str] | None) -> list[GridCell]:
    if not only:
        return cells
    names = {cell.name for cell in cells}
    unknown = sorted(set(only) - names)
    if unknown:
        raise ConfigError(f"--only {unknown}: no such cell; the cells are {', '.join(sorted(names))}")
    return [cell for cell in cells if cell.name in only]


def _validate(cell: GridCell) -> str:
    from .training import TrainConfig

    try:
        TrainConfig.from_mapping(cell.parameters, source=str(cell.run_dir / PARAMS_FILE))
    except ConfigError as error:
        return str(error)
    return ""


def run_cell(cell: GridCell, env: Mapping[str, str] | None = None, timeout_s: float | None = None) -> CellResult:
    """Run one cell through papermill and record its exit status; a failed run is returned, not raised."""
    from .runner import error_summary, run_notebook

    logger.info("cell %s: starting (%s)", cell.name, ", ".join(f"{k}={v}" for k, v in cell.axis_values.items()))
    started = time.monotonic()
    try:
        run = run_notebook(STAGE, cell.notebook, cell.parameters, env=env, timeout_s=timeout_s)
        returncode = run.returncode
    except (OSError, WgsyError) as error:
        logger.error("cell %s: could not start papermill: %s", cell.name, error)
        returncode = None
    seconds = time.monotonic() - started
    _write_status(cell, returncode, seconds)

    if returncode == 0 and is_cell_done(cell.run_dir):
        return CellResult(cell.name, "done", 0, seconds, "", str(cell.notebook), str(cell.log_file))
    error = error_summary(cell.log_file) if returncode != 0 else "the run exited 0 but adapter or metrics.json is missing"
    return CellResult(cell.name, "failed", returncode, seconds, error, str(cell.notebook), str(cell.log_file))


def _write_status(cell: GridCell, returncode: int | None, seconds: float) -> None:
    path = cell.run_dir / STATUS_FILE
    path.write_text(json.dumps({"cell": cell.name, "returncode": returncode, "seconds": round(seconds, 1),
                                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2) + "\n",
                    encoding="utf-8")


def _run_local(cells: list[GridCell], envs: Mapping[str, Mapping[str, str]], timeout_s: float | None) -> list[CellResult]:
    gpus = _visible_gpus()
    if len(gpus) <= 1:
        if cells:
            logger.info("running %d cell(s) one after another (%s)", len(cells),
                        "one GPU" if gpus else "no GPU")
        return [run_cell(cell, envs[cell.name], timeout_s) for cell in cells]

    logger.info("running %d cell(s) in parallel, one per GPU: %s", len(cells), ", ".join(gpus))
    free: Queue[str] = Queue()
    for gpu in gpus:
        free.put(gpu)

    def run_on_free_gpu(cell: GridCell) -> CellResult:
        gpu = free.get()
        try:
            return run_cell(cell, {**envs[cell.name], "CUDA_VISIBLE_DEVICES": gpu}, timeout_s)
        finally:
            free.put(gpu)

    with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
        return list(pool.map(run_on_free_gpu, cells))


def _visible_gpus() -> list[str]:
    """Return the GPU ids this process may hand out (CUDA_VISIBLE_DEVICES, else every CUDA device)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() and gpu.strip() != "-1"]
    try:
        import torch
    except ImportError:
        return []
    return [str(index) for index in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def _run_submitit(cells: list[GridCell], envs: Mapping[str, Mapping[str, str]], spec: GridSpec, *, cluster: str,
                  timeout_s: float | None) -> list[CellResult]:
    try:
        import submitit
    except ImportError:
        raise ConfigError("the submitit executors need the submitit package; install it with "
                          "`pip install -e '.[slurm]'`, or use --executor local") from None
    if not cells:
        return []
    folder = spec.output_dir / "submitit"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    parameters = {"timeout_min": int((timeout_s or 24 * 3600) / 60) + 1, **spec.slurm}
    if cluster == "slurm":
        # One GPU per array task: a cell is one papermill run on one GPU.
        parameters.setdefault("gpus_per_node", 1)
        parameters.setdefault("slurm_array_parallelism", len(cells))
    executor.update_parameters(**parameters)
    logger.info("submitting %d cell(s) to submitit (%s); job files in %s", len(cells), cluster, folder)
    jobs = executor.map_array(run_cell, cells, [dict(envs[cell.name]) for cell in cells], [timeout_s] * len(cells))
    results = []
    for cell, job in zip(cells, jobs):
        try:
            results.append(job.result())
        except Exception as error:  # noqa: BLE001 - a lost job (node failure, timeout) must not stop the rest
            logger.error("cell %s: submitit job %s failed: %s", cell.name, job.job_id, error)
            results.append(CellResult(cell.name, "failed", None, 0.0, f"submitit job {job.job_id} failed: {error}",
                                      str(cell.notebook), str(cell.log_file)))
    return results


def leaderboard_rows(cells: list[GridCell]) -> list[dict[str, Any]]:
    """Return one row per cell with its status and validation metrics, best validation accuracy first."""
    rows = []
    for cell in cells:
        row: dict[str, Any] = {"cell": cell.name, **cell.axis_values, "status": _cell_state(cell.run_dir)}
        metrics_file = cell.run_dir / "metrics.json"
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            row["val_accuracy"] = metrics.get("accuracy")
            row["val_n"] = metrics.get("n")
            row["chance_accuracy"] = metrics.get("chance_accuracy")
            for name, counts in (metrics.get("per_class") or {}).items():
                row[f"recall {name}"] = counts.get("recall")
        card_file = cell.run_dir / "run_card.json"
        if card_file.is_file():
            card = json.loads(card_file.read_text(encoding="utf-8"))
            row["train_loss"] = (card.get("train") or {}).get("training_loss")
            row["wall_time_s"] = card.get("wall_time_s")
            row["peak_memory_gb"] = round(card["peak_memory_bytes"] / 1e9, 2) if card.get("peak_memory_bytes") else None
            row["adapter_mb"] = round(card["adapter_bytes"] / 1e6, 2) if card.get("adapter_bytes") else None
        row["run_dir"] = str(cell.run_dir)
        rows.append(row)
    rows.sort(key=lambda row: (row.get("val_accuracy") is None, -(row.get("val_accuracy") or 0.0)))
    return rows


def _cell_state(run_dir: Path) -> str:
    if is_cell_done(run_dir):
        return "done"
    if (run_dir / STATUS_FILE).is_file():
        return "failed"
    return "not run"


def write_leaderboard(output_dir: Path, *, cells: list[GridCell]) -> Path:
    """Write leaderboard.csv (validation metrics per cell) into the grid's output folder."""
    rows = leaderboard_rows(cells)
    fields: list[str] = []
    for row in rows:
        fields.extend(name for name in row if name not in fields)
    path = output_dir / LEADERBOARD_FILE
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    log_written(path, "grid leaderboard (validation metrics per cell)")
    return path


def leaderboard_table(grid_dir: str | Path) -> Any:
    """Return leaderboard.csv of a grid folder as a pandas DataFrame (for a notebook table)."""
    import pandas as pd

    path = resolve_path(grid_dir) / LEADERBOARD_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found; run `wgsy grid GRID.yaml` first")
    return pd.read_csv(path)


def _log_summary(results: list[CellResult]) -> None:
    counts = {status: sum(result.status == status for result in results)
              for status in ("done", "skipped", "failed", "invalid")}
    logger.info("grid finished: %s", ", ".join(f"{count} {status}" for status, count in counts.items()))
    for result in results:
        if result.status == "failed":
            logger.error("cell %s failed (exit status %s): %s\n  executed notebook: %s\n  log: %s", result.name,
                         result.returncode, result.error, result.notebook, result.log)


def results_as_dicts(results: list[CellResult]) -> list[dict[str, Any]]:
    """Return the results as plain dicts (for JSON or a DataFrame)."""
    return [asdict(result) for result in results]


def sibling_leaderboard(run_dir: str | Path) -> Any:
    """Return a DataFrame of validation metrics for this run and the other runs in the same grid folder.

    Used by 03_train's last step, so each executed notebook shows how its cell ranks.
    """
    import pandas as pd

    run_dir = resolve_path(run_dir)
    siblings = sorted(path for path in run_dir.parent.iterdir() if (path / "run_card.json").is_file())
    cells = [GridCell(path.name, {}, {}, path) for path in siblings]
    rows = leaderboard_rows(cells)
    for row in rows:
        row.pop("run_dir", None)
    return pd.DataFrame(rows)
