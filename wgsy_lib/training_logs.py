"""Training run reporting: log lines, TensorBoard events, loss curves, and the test-only crash
hook that the resume test uses."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .log import log_written

logger = logging.getLogger(__name__)

CURVE_FIELDS = ("step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm")


class LoggingCallback(TrainerCallback):
    """Send the Trainer's periodic logs to the wgsy logger as one readable line each.

    Used in headless runs in place of progress bars and printed dicts, so the executed notebook
    shows one line per `logging_steps`.
    """

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or not state.is_local_process_zero:
            return
        text = " ".join(f"{name}={_format(value)}" for name, value in logs.items() if name != "total_flos")
        logger.info("step %d/%d: %s", state.global_step, state.max_steps, text)


class CrashAfterStepCallback(TrainerCallback):
    """Kill the process right after the checkpoint at or past a given step is saved.

    Only the resume test sets WGSY_TEST_CRASH_AFTER_STEP; it stands in for a power cut or an
    out-of-memory kill, so the next run must resume from that checkpoint.
    """

    ENV = "WGSY_TEST_CRASH_AFTER_STEP"
    EXIT_STATUS = 17

    def __init__(self, step: int) -> None:
        self.step = step

    @classmethod
    def from_environment(cls) -> "CrashAfterStepCallback | None":
        value = os.environ.get(cls.ENV, "").strip()
        return cls(int(value)) if value else None

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            logger.error("%s=%d: stopping the process after the checkpoint of step %d (test crash)", self.ENV,
                         self.step, state.global_step)
            logging.shutdown()
            os._exit(self.EXIT_STATUS)


def tensorboard_callback(log_dir: Path) -> Any:
    """Return a TensorBoard callback writing into `log_dir` (one folder per run)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    log_dir.mkdir(parents=True, exist_ok=True)
    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))


def write_curves(log_history: list[dict[str, Any]], run_dir: Path) -> tuple[Path, Path]:
    """Write loss_curve.csv (one row per logged step) and loss_curve.png into `run_dir`."""
    rows = [{name: entry.get(name) for name in CURVE_FIELDS} for entry in log_history
            if "loss" in entry or "eval_loss" in entry]
    csv_path = run_dir / "loss_curve.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    log_written(csv_path, "loss curve table")

    png_path = run_dir / "loss_curve.png"
    figure = plot_curves(rows)
    figure.savefig(png_path, dpi=100, bbox_inches="tight")
    log_written(png_path, "loss curve figure")
    return csv_path, png_path


def plot_curves(rows: list[dict[str, Any]]) -> Any:
    """Return a matplotlib figure of training and validation loss against the step."""
    # A bare Figure (no pyplot) leaves the notebook's backend alone and needs no display.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    for name, label in (("loss", "training loss"), ("eval_loss", "validation loss")):
        points = [(row["step"], row[name]) for row in rows if row.get(name) is not None]
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, marker="o" if len(points) < 30 else None, label=label)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("cross-entropy on answer tokens")
    axes.legend()
    axes.grid(alpha=0.3)
    return figure


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
