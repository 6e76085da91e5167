"""Tables, plots and views of an annotation store, for the 01_annotate notebook.

Everything here reads the records of one configuration (backend, model, prompt version, mode) for
the photos of the manifest; records of other configurations in the same store are left alone.
Only records with status `ok` contribute feature values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from .annotation_store import AnnotationStore, annotation_key
from .features import TYPICAL, UNJUDGED_VALUES, FeatureSchema, load_features
from .images import file_sha256
from .log import log_written
from .notebook import is_headless
from .plots import PHOTO_KIND, PLOT_KIND, show_figure
from .prompts import prompt_version

logger = logging.getLogger(__name__)

STATUS_ORDER = ["ok", "invalid", "truncated", "refused", "error", "missing"]
_HASHES: dict[tuple[str, int, int], str] = {}


def annotation_table(config: Any) -> pd.DataFrame:
    """Return one row per manifest photo with its latest record of this configuration (status `missing` if none)."""
    features = load_features(config.features_file)
    version = prompt_version(config.prompt_template, features)
    from .annotate import read_cohort

    _manifest_path, frame, root = read_cohort(config)
    latest = AnnotationStore(config.store_path).latest()

    rows = []
    for row in frame.to_dict("records"):
        path = root / row["image"]
        sha = _cached_sha256(path)
        record = latest.get(annotation_key(sha, config.backend_id, config.model_id, version, config.mode))
        values = dict(row, image_path=str(path), image_sha256=sha, status=record.status if record else "missing",
                      explanation=record.explanation if record else None, reason=record.reason if record else None,
                      out_of_schema=len(record.out_of_schema) if record else 0)
        for feature in features:
            values[feature.name] = (record.features or {}).get(feature.name) if record and record.status == "ok" else None
        rows.append(values)
    return pd.DataFrame(rows)


def summarize_annotations(config: Any, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Count records by class and status, write status_counts.csv, and return the table."""
    table = annotation_table(config) if table is None else table
    counts = pd.crosstab(table["label"], table["status"]).reindex(columns=STATUS_ORDER, fill_value=0)
    counts.loc["all"] = counts.sum()
    counts["out_of_schema_values"] = list(table.groupby("label")["out_of_schema"].sum().reindex(counts.index[:-1], fill_value=0)) \
        + [int(table["out_of_schema"].sum())]
    path = config.output_path / "status_counts.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    counts.to_csv(path)
    log_written(path, "annotation status counts by class")
    return counts


def feature_value_counts(table: pd.DataFrame, features: FeatureSchema) -> pd.DataFrame:
    """Return, per class, feature and value, the number and fraction of `ok` photos with that value."""
    ok = table[table["status"] == "ok"]
    rows = []
    for label, group in ok.groupby("label"):
        for feature in features:
            counts = group[feature.name].value_counts()
            for value, hpo_id in feature.values.items():
                count = int(counts.get(value, 0))
                rows.append({"label": label, "feature": feature.name, "value": value, "hpo_id": hpo_id or "",
                             "count": count, "fraction": count / len(group) if len(group) else 0.0})
    return pd.DataFrame(rows, columns=["label", "feature", "value", "hpo_id", "count", "fraction"])


def abnormal_fractions(table: pd.DataFrame, features: FeatureSchema) -> pd.DataFrame:
    """Return feature x class: the fraction of judged `ok` photos with an abnormal value."""
    ok = table[table["status"] == "ok"]
    result = {}
    for label, group in ok.groupby("label"):
        column = {}
        for feature in features:
            values = group[feature.name]
            judged = values[~values.isin(UNJUDGED_VALUES)]
            column[feature.name] = float((judged != TYPICAL).mean()) if len(judged) else float("nan")
        result[label] = column
    return pd.DataFrame(result, index=features.names)


def write_feature_table(config: Any, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write the per-class feature value table (CSV) and its plot (PNG); return the abnormal fractions."""
    import matplotlib.pyplot as plt

    features = load_features(config.features_file)
    table = annotation_table(config) if table is None else table
    output = config.output_path
    output.mkdir(parents=True, exist_ok=True)
    counts_path = output / "feature_values.csv"
    feature_value_counts(table, features).to_csv(counts_path, index=False)
    log_written(counts_path, "feature values per class")

    fractions = abnormal_fractions(table, features)
    figure, axis = plt.subplots(figsize=(2 + 1.6 * max(1, fractions.shape[1]), 0.35 * len(fractions) + 1.5))
    image = axis.imshow(fractions.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axis.set_xticks(range(fractions.shape[1]), fractions.columns, rotation=30, ha="right")
    axis.set_yticks(range(len(fractions)), fractions.index)
    axis.set_title("Photos with an abnormal value (fraction of judged photos)")
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    plot_path = output / "feature_abnormal_fraction.png"
    figure.savefig(plot_path, dpi=120)
    log_written(plot_path, "plot of abnormal feature fractions per class")
    _show(figure)
    return fractions


def show_annotations(config: Any, table: pd.DataFrame | None = None, *, count: int = 8) -> pd.DataFrame:
    """Return a static view of the first `count` annotated photos: their abnormal features and explanation.

    With `show_photos` the photos are drawn too; by default they are not, so executed notebooks
    shared as reports carry no patient photos.
    """
    features = load_features(config.features_file)
    table = annotation_table(config) if table is None else table
    shown = table[table["status"] == "ok"].head(count)
    view = pd.DataFrame({
        "image": shown["image"], "label": shown["label"],
        "abnormal features": [_abnormal_text(row, features) for row in shown.to_dict("records")],
        "explanation": shown["explanation"],
    })
    if config.show_photos and len(shown):
        _draw_photos(shown, features)
    return view.reset_index(drop=True)


def annotation_browser(config: Any, table: pd.DataFrame | None = None) -> Any:
    """Return an ipywidgets browser (photo and its features), or None in headless runs or when off."""
    if is_headless() or not config.browser:
        return None
    import ipywidgets as widgets

    features = load_features(config.features_file)
    table = annotation_table(config) if table is None else table
    rows = table.to_dict("records")
    if not rows:
        return None
    slider = widgets.IntSlider(min=0, max=len(rows) - 1, description="photo")
    photo = widgets.Image(format="jpeg", width=320)
    details = widgets.HTML()

    def update(change: Any = None) -> None:
        row = rows[slider.value]
        if config.show_photos:
            photo.value = Path(row["image_path"]).read_bytes()
        values = "".join(f"<tr><td>{feature.name}</td><td>{row.get(feature.name) or ''}</td></tr>" for feature in features)
        details.value = (f"<b>{row['image']}</b> ({row['label']}, status {row['status']})<br>"
                         f"<table>{values}</table><p>{row.get('explanation') or ''}</p>")

    slider.observe(update, names="value")
    update()
    return widgets.VBox([slider, widgets.HBox([photo, details]) if config.show_photos else details])


def _abnormal_text(row: dict[str, Any], features: FeatureSchema) -> str:
    found = [f"{feature.name}={row[feature.name]}" for feature in features
             if row.get(feature.name) not in (None, TYPICAL, *UNJUDGED_VALUES)]
    return ", ".join(found) or "none"


def _draw_photos(shown: pd.DataFrame, features: FeatureSchema) -> None:
    import matplotlib.pyplot as plt

    from .images import load_image

    columns = min(4, len(shown))
    rows = (len(shown) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.8 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, row in zip(axes.flat, shown.to_dict("records")):
        axis.imshow(load_image(row["image_path"]).image)
        axis.set_title(f"{row['label']}\n{_abnormal_text(row, features)[:60]}", fontsize=7)
    figure.tight_layout()
    _show(figure, kind=PHOTO_KIND)


def _show(figure: Any, *, kind: str = PLOT_KIND) -> None:
    # Displayed through IPython when there is a kernel (live or papermill), so the executed notebook
    # keeps the static figure, marked as a plot or a photo so HTML reports know whether to keep it;
    # closed either way so figures do not pile up in memory.
    import matplotlib.pyplot as plt

    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        show_figure(figure, kind=kind)
    plt.close(figure)


def _cached_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]
