"""Figures of the evaluation: confusion matrices and ROC curves, saved as PNG and shown in notebooks.

Figures are drawn from a metrics dict (`wgsy_lib.metrics.classification_metrics`), so a plot can
be redrawn from metrics.json without the model. `show_figure` marks each displayed figure as a
plot in the notebook's output metadata; the report export keeps marked plots and removes every
other image unless photos were requested (see `wgsy_lib.report`).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")  # Files first; notebooks display the saved PNG bytes through show_figure.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .log import log_written  # noqa: E402

logger = logging.getLogger(__name__)

# Output metadata that marks an image as a plot (kept in reports) or a photograph (removed unless asked).
OUTPUT_METADATA_KEY = "wgsy"
PLOT_KIND = "plot"
PHOTO_KIND = "photo"
_DPI = 110


def plot_confusion_matrix(metrics: Mapping[str, Any], *, title: str = "") -> Figure:
    """Draw the confusion matrix twice: counts, and rows normalised to sum to one (recall on the diagonal)."""
    matrix = metrics["confusion_matrix"]
    rows, columns = matrix["rows"], matrix["columns"]
    counts = np.asarray(matrix["counts"], dtype=float)
    normalized = np.asarray(matrix["row_normalized"], dtype=float)

    size = 2.2 + 0.9 * len(columns)
    figure, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size), constrained_layout=True)
    for axis, values, heading, number_format in (
        (axes[0], counts, "counts", "{:.0f}"),
        (axes[1], normalized, "row-normalised (recall on the diagonal)", "{:.2f}"),
    ):
        image = axis.imshow(values, cmap="Blues", vmin=0, vmax=max(values.max(), 1e-9) if values.size else 1)
        axis.set_xticks(range(len(columns)), labels=[_short(name) for name in columns], rotation=35, ha="right")
        axis.set_yticks(range(len(rows)), labels=[_short(name) for name in rows])
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(heading, fontsize=10)
        threshold = values.max() / 2 if values.size else 0
        for (row, column), value in np.ndenumerate(values):
            axis.text(column, row, number_format.format(value), ha="center", va="center", fontsize=8,
                      color="white" if value > threshold else "black")
        figure.colorbar(image, ax=axis, shrink=0.8)
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def plot_roc_curves(metrics: Mapping[str, Any], *, title: str = "") -> Figure | None:
    """Draw one-vs-rest ROC curves with their AUC and the chance diagonal; None without probabilities."""
    curves = metrics.get("roc")
    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(5.5, 5), constrained_layout=True)
    for name, curve in curves.items():
        auc = metrics["auc"].get(name)
        axis.plot(curve["fpr"], curve["tpr"], label=f"{name} (AUC {auc:.2f})")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (AUC 0.50)")
    axis.set_xlabel("false positive rate (1 - specificity)")
    axis.set_ylabel("true positive rate (sensitivity)")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(title or "one-vs-rest ROC", fontsize=11)
    return figure


def save_figure(figure: Figure, path: str | Path, what: str) -> Path:
    """Write `figure` as PNG to `path`, close it, and log the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    log_written(path, what, log=logger)
    return path


def show_image_file(path: str | Path, *, kind: str = PLOT_KIND) -> None:
    """Display a PNG file in the notebook, marked in the output metadata as a plot or a photo."""
    show_png(Path(path).read_bytes(), kind=kind)


def show_png(data: bytes, *, kind: str = PLOT_KIND) -> None:
    """Display PNG bytes in the notebook, marked in the output metadata as a plot or a photo."""
    from IPython.display import Image, display

    display(Image(data=data, format="png"), metadata={OUTPUT_METADATA_KEY: {"kind": kind}})


def show_figure(figure: Figure, *, kind: str = PLOT_KIND) -> None:
    """Display a matplotlib figure in the notebook, marked as a plot (or a photo), then close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    plt.close(figure)
    show_png(buffer.getvalue(), kind=kind)


def _short(name: str) -> str:
    return name.replace(" syndrome", "").replace("healthy control", "control")
