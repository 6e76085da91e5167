"""Run a stage notebook headlessly through papermill, as a user would by hand.

The notebook runs in a child process (`python -m papermill`), so a crash or out-of-memory kill of
one run cannot take the caller down, and success is decided from the child's exit status and the
artefacts the caller expects, never from the absence of an exception.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError
from .log import log_written
from .notebook import HEADLESS_ENV
from .paths import notebooks_dir, repo_root, resolve_path

logger = logging.getLogger(__name__)

STAGES = ("01_annotate", "02_convert", "03_train", "04_evaluate")
# Headless runs refresh progress bars at most this often (seconds), so executed notebooks and logs
# stay readable; tqdm reads TQDM_* environment variables as defaults for every bar.
HEADLESS_PROGRESS_INTERVAL_S = 30
# A Python exception line in a papermill log ("wgsy_lib.errors.DataError: manifest ... row 3: ...").
_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)):\s*(.*)$")


@dataclass(frozen=True)
class NotebookRun:
    """The outcome of one papermill run."""

    notebook: Path
    output: Path
    parameters_file: Path
    returncode: int
    seconds: float
    log_file: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def notebook_path(stage: str) -> Path:
    """Return the path of a stage notebook by stage name ("03_train") or file path."""
    candidate = Path(stage)
    if candidate.suffix == ".ipynb":
        return candidate if candidate.is_absolute() else repo_root() / candidate
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)} or a path to an .ipynb file")
    return notebooks_dir() / f"{stage}.ipynb"


def run_notebook(stage: str, output: str | Path, parameters: Mapping[str, Any] | None = None, *,
                 env: Mapping[str, str] | None = None, timeout_s: float | None = None) -> NotebookRun:
    """Execute a stage notebook with `parameters`, writing the executed notebook to `output`.

    The parameters are written to `<output stem>.params.yaml` beside the output and passed with
    `papermill -f`, exactly the file a user could rerun by hand. The child's output goes to
    `<output stem>.log`. Returns the run; check `.ok` and the expected artefacts.
    """
    source = notebook_path(stage)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    parameters_file = output.with_suffix(".params.yaml")
    parameters_file.write_text(yaml.safe_dump(dict(parameters or {}), sort_keys=False, allow_unicode=True), encoding="utf-8")
    log_file = output.with_suffix(".log")

    command = [sys.executable, "-m", "papermill", str(source), str(output), "-f", str(parameters_file),
               "--cwd", str(repo_root()), "--no-progress-bar", "--log-output"]
    child_env = _child_environment(env)
    logger.info("running %s -> %s", source.name, output)
    started = time.monotonic()
    with open(log_file, "w", encoding="utf-8") as log_handle:
        try:
            completed = subprocess.run(command, stdout=log_handle, stderr=subprocess.STDOUT, env=child_env,
                                       timeout=timeout_s, check=False)
            returncode = completed.returncode
        except subprocess.TimeoutExpired:
            logger.error("%s timed out after %.0f s; see %s", source.name, timeout_s, log_file)
            returncode = -9
    run = NotebookRun(source, output, parameters_file, returncode, time.monotonic() - started, log_file)
    if run.ok:
        log_written(output, f"executed {source.name} ({run.seconds:.0f} s)")
    else:
        logger.error("%s failed (exit status %d): %s\nThe executed notebook %s shows the failing cell; the log is %s",
                     source.name, returncode, error_summary(log_file), output, log_file)
    return run


def run_stage_file(stage: str, config_class: type, params_file: str | Path,
                   output: str | Path | None = None) -> NotebookRun:
    """Validate a stage's parameter file, then run the stage notebook with it (the `wgsy STAGE` commands).

    A bad parameter fails here, before a kernel starts. The executed notebook goes to `output`,
    or to `<stage>.ipynb` in the parameters' output_dir.
    """
    config = config_class.from_yaml(params_file)
    target = resolve_path(output) if output else config.path("output_dir") / f"{stage}.ipynb"
    return run_notebook(stage, target, config.to_dict())


def error_summary(log_file: Path) -> str:
    """Return the last exception line of a papermill log, or a pointer to the log if none is found."""
    if not log_file.is_file():
        return "no log was written"
    lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in reversed(lines):
        match = _ERROR_LINE.match(line.strip())
        if match and match.group(1) not in ("PapermillExecutionError",):
            return f"{match.group(1)}: {match.group(2)}"[:500]
    return f"see the log {log_file}"


def _child_environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    child_env = dict(os.environ)
    # The child must import this checkout's wgsy_lib, whichever environment papermill runs in.
    root = str(repo_root())
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, child_env.get("PYTHONPATH", "")]))
    child_env[HEADLESS_ENV] = "1"
    child_env.setdefault("TQDM_MININTERVAL", str(HEADLESS_PROGRESS_INTERVAL_S))
    child_env.setdefault("WGSY_ROOT", root)
    child_env.update(extra or {})
    return child_env
