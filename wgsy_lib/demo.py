"""`wgsy demo`: the whole pipeline on the phantom cohort and the tiny model, headless.

Steps, each reusing what an earlier demo run left when its inputs are unchanged:

1. build the tiny Gemma 3 model (outputs/demo/tiny-model) and draw the phantom cohort
   (outputs/demo/phantom) from params/demo/phantom.yaml;
2. run 01_annotate, 02_convert, the 03_train grid and 04_evaluate through papermill with the
   parameter files in params/demo/, exactly as a user would by hand;
3. export every executed notebook to HTML under outputs/demo/reports (no photos embedded);
4. log where to look and the headline numbers: the model selected on validation, its test scores
   with confidence intervals, the zero-shot baseline and chance.

Everything the demo writes lies under one folder (outputs/demo by default). The parameter files
name paths under outputs/demo; with another folder, that prefix is replaced in every parameter.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .errors import WgsyError
from .log import log_written
from .paths import outputs_dir, params_dir

logger = logging.getLogger(__name__)

DEMO_PREFIX = "outputs/demo"
STATE_FILE = "demo_state.json"
# Parameters the quick variant (`wgsy demo --quick`, used by the test suite) changes, so the whole
# pipeline runs in a few minutes on 2 CPU cores. Everything else is the demo's own parameter files.
QUICK_PHANTOM = {"subjects_per_class": 5, "photos_per_subject": [1, 2]}
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "01_annotate": {"limit": 12},
    "03_train": {"max_steps": 4, "eval_steps": 2, "save_steps": 2, "logging_steps": 2},
    "04_evaluate": {"n_bootstrap": 200, "max_new_tokens": 16},
}


class DemoError(WgsyError, RuntimeError):
    """A demo step failed; the message points at its executed notebook and log."""


@dataclass
class DemoSummary:
    """The locations of a finished demo's results, and its headline numbers."""

    out_dir: Path
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    reports: list[Path] = field(default_factory=list)
    selected: str | None = None
    headline: list[dict[str, Any]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Return the closing summary as text lines, for the CLI to print."""
        lines = [f"WGSY demo finished in {self.seconds / 60:.1f} min; everything is under {self.out_dir}"]
        lines.append("The cohort is SYNTHETIC (phantom faces) and the model is a tiny random stand-in for MedGemma:")
        lines.append("the numbers show that the pipeline runs end to end, not how well anything recognises a syndrome.")
        lines.append("Reports (HTML, no photos embedded):")
        lines += [f"  {path}" for path in self.reports]
        if self.selected:
            lines.append(f"Model selected on the validation split: {self.selected}")
        for row in self.headline:
            interval = f" {row['balanced_accuracy_ci']}" if row.get("balanced_accuracy_ci") else ""
            lines.append(
                f"  {row['role']:<24} {row['model']:<28} test balanced accuracy {row['balanced_accuracy']:.3f}{interval}"
                f" (chance {row['chance_balanced_accuracy']:.3f}), accuracy {row['accuracy']:.3f}"
                f" (chance {row['chance_accuracy']:.3f})"
            )
        return lines


def run_demo(*, out_dir: str | Path | None = None, quick: bool = False, fresh: bool = False) -> DemoSummary:
    """Run the whole demo into `out_dir` (default outputs/demo) and return its summary."""
    out_dir = Path(out_dir).resolve() if out_dir is not None else outputs_dir() / "demo"
    if fresh and out_dir.exists():
        logger.info("--fresh: removing %s", out_dir)
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary = DemoSummary(out_dir=out_dir, seconds=0.0)

    _timed(summary, "assets", lambda: prepare_assets(out_dir, quick=quick))
    notebooks = out_dir / "notebooks"
    # A stage whose executed notebook finished with the same parameters, after unchanged upstream
    # steps, is reused; once one step runs, every later step runs again.
    rerun = False
    for stage in ("01_annotate", "02_convert"):
        rerun = _timed(summary, stage, lambda stage=stage: run_stage(stage, out_dir, notebooks / f"{stage}.ipynb",
                                                                     quick=quick, force=rerun)) or rerun
    rerun = _timed(summary, "03_train grid", lambda: run_demo_grid(out_dir, quick=quick)) or rerun
    _timed(summary, "04_evaluate", lambda: run_stage("04_evaluate", out_dir, notebooks / "04_evaluate.ipynb",
                                                     quick=quick, force=rerun))
    summary.reports = _timed(summary, "reports", lambda: export_reports(out_dir))

    summary.selected, summary.headline = headline_numbers(out_dir / "evaluate")
    summary.seconds = time.monotonic() - started
    path = out_dir / "demo_summary.json"
    path.write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n", encoding="utf-8")
    log_written(path, "demo summary")
    return summary


def prepare_assets(out_dir: Path, *, quick: bool = False) -> None:
    """Build the tiny model and draw the phantom cohort, unless the same ones are already there.

    When either changes (new settings or a new version of their code), everything computed from
    them is removed, so no stale annotation, split or adapter is reused.
    """
    from .phantom import cache_key, make_phantom_cohort, phantom_settings
    from .tiny_model import build_tiny_model, settings_for

    model_settings = settings_for()
    phantom_values = {**_read_yaml(params_dir() / "demo" / "phantom.yaml"), **(QUICK_PHANTOM if quick else {})}
    cohort_settings = phantom_settings(**phantom_values)
    wanted = {"tiny_model": model_settings.key(), "phantom": cache_key(cohort_settings)}

    state_path = out_dir / STATE_FILE
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    model_dir, cohort_dir = out_dir / "tiny-model", out_dir / "phantom"
    if state != wanted or not (model_dir / "config.json").is_file() or not (cohort_dir / "manifest.csv").is_file():
        for stale in ("tiny-model", "phantom", "annotate", "annotations.jsonl", "data", "grid", "evaluate",
                      "notebooks", "reports"):
            target = out_dir / stale
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        build_tiny_model(model_dir, settings=model_settings)
        make_phantom_cohort(cohort_dir, settings=cohort_settings)
        state_path.write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")
    else:
        logger.info("reusing the tiny model in %s and the phantom cohort in %s", model_dir, cohort_dir)


def demo_parameters(stage: str, out_dir: Path, *, quick: bool = False) -> dict[str, Any]:
    """Return the demo parameters of a stage, with outputs/demo replaced by `out_dir`."""
    values = _read_yaml(params_dir() / "demo" / f"{stage}.yaml")
    if quick:
        values.update(QUICK_OVERRIDES.get(stage, {}))
    return _relocate(values, out_dir)


def run_stage(stage: str, out_dir: Path, executed: Path, *, quick: bool = False, force: bool = False) -> bool:
    """Run one stage notebook through papermill with the demo parameters; raise DemoError on failure.

    Return True when it ran, False when an earlier run with the same parameters was reused (its
    executed notebook and a stamp of its parameters are kept beside each other).
    """
    from .runner import error_summary, run_notebook

    parameters = demo_parameters(stage, out_dir, quick=quick)
    stamp = executed.with_suffix(".done.json")
    wanted = json.dumps(parameters, sort_keys=True, default=str)
    if not force and executed.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == wanted:
        logger.info("reusing %s: it finished with the same parameters (`wgsy demo --fresh` runs everything again)",
                    executed)
        return False
    stamp.unlink(missing_ok=True)
    run = run_notebook(stage, executed, parameters)
    if not run.ok:
        raise DemoError(f"demo step {stage} failed (exit status {run.returncode}): {error_summary(run.log_file)}. "
                        f"The executed notebook {run.output} "
                        f"shows the failing cell and {run.log_file} has the full log; fix the cause and rerun "
                        "`wgsy demo` (finished steps are reused).")
    stamp.write_text(wanted, encoding="utf-8")
    return True


def run_demo_grid(out_dir: Path, *, quick: bool = False) -> bool:
    """Run the demo's LoRA grid (params/demo/grid.yaml); every cell must finish.

    Return True when any cell ran, False when every cell was already done.
    """
    from .grid import load_grid, run_grid

    grid_values = _read_yaml(params_dir() / "demo" / "grid.yaml")
    if quick:
        grid_values.setdefault("base", {}).update(QUICK_OVERRIDES["03_train"])
    grid_file = out_dir / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(_relocate(grid_values, out_dir), sort_keys=False), encoding="utf-8")
    results = run_grid(load_grid(grid_file))
    failed = [result for result in results if result.status not in ("done", "skipped")]
    if failed:
        names = ", ".join(f"{result.name} ({result.status})" for result in failed)
        raise DemoError(f"demo grid cell(s) {names} failed; see the cell folders under {out_dir / 'grid'} "
                        "(each has its executed 03_train notebook and log), then rerun `wgsy demo`.")
    return any(result.status != "skipped" for result in results)


def export_reports(out_dir: Path) -> list[Path]:
    """Export every executed notebook of the demo to HTML under out_dir/reports, without photos."""
    from .report import export_html

    reports_dir = out_dir / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)
    executed = sorted((out_dir / "notebooks").glob("*.ipynb")) + sorted((out_dir / "grid").glob("*/03_train.ipynb"))
    reports = []
    for notebook in executed:
        name = notebook.stem if notebook.parent.name == "notebooks" else f"03_train-{notebook.parent.name}"
        reports.append(export_html(notebook, reports_dir / f"{name}.html"))
    return reports


def headline_numbers(evaluate_dir: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """Read the selected model and its test scores beside the baseline from 04_evaluate's outputs."""
    selection_path = evaluate_dir / "selection.json"
    comparison_path = evaluate_dir / "comparison.csv"
    if not selection_path.is_file() or not comparison_path.is_file():
        return None, []
    selection = json.loads(selection_path.read_text(encoding="utf-8"))
    selected = selection.get("selected")
    comparison = pd.read_csv(comparison_path)
    rows = []
    test_rows = comparison[(comparison["role"] == "test") & (comparison["mode"] == selection.get("mode", "score"))]
    for _, row in test_rows.iterrows():
        if row["model"] == selected:
            role = "selected on validation"
        elif row["model"] == "base":
            role = "zero-shot baseline"
        else:
            continue
        entry = {**row.to_dict(), "role": role}
        test_summary = (selection.get("test") or {}).get(row["file"], {})
        if row["model"] == selected and test_summary.get("balanced_accuracy_ci"):
            entry["balanced_accuracy_ci"] = test_summary["balanced_accuracy_ci"]
        rows.append(entry)
    return selected, rows


def _relocate(value: Any, out_dir: Path) -> Any:
    # Demo parameter files name paths under outputs/demo; point them at out_dir instead.
    if isinstance(value, str) and (value == DEMO_PREFIX or value.startswith(DEMO_PREFIX + "/")):
        return str(out_dir) + value[len(DEMO_PREFIX):]
    if isinstance(value, list):
        return [_relocate(item, out_dir) for item in value]
    if isinstance(value, dict):
        return {key: _relocate(item, out_dir) for key, item in value.items()}
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _timed(summary: DemoSummary, name: str, step):
    started = time.monotonic()
    logger.info("demo step: %s", name)
    result = step()
    summary.steps[name] = round(time.monotonic() - started, 1)
    logger.info("demo step %s done in %.0f s", name, summary.steps[name])
    return result


