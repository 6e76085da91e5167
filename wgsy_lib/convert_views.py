"""Tables and figures of a conversion for the 02_convert notebook (static, so they survive papermill)."""

from __future__ import annotations

import io
import logging

import pandas as pd
from matplotlib.figure import Figure

from .convert import Conversion
from .images import fit_within, load_image
from .plots import PHOTO_KIND, show_figure, show_png

logger = logging.getLogger(__name__)

SPLIT_ORDER = ("train", "val", "test")
# Longest side of a photo shown beside the example rows (only when show_photos is set).
PREVIEW_SIDE = 160


def split_counts(conversion: Conversion) -> pd.DataFrame:
    """Return photos and people per split and class, with mean age and counts by sex."""
    examples = conversion.examples.copy()
    examples["age"] = pd.to_numeric(examples["age"], errors="coerce")
    examples["female"] = examples["sex"] == "female"
    examples["male"] = examples["sex"] == "male"
    examples["sex_unknown"] = examples["sex"] == ""
    table = examples.groupby(["split", "label"]).agg(
        photos=("image", "size"), people=("subject_id", "nunique"), age_mean=("age", "mean"),
        female_photos=("female", "sum"), male_photos=("male", "sum"), sex_unknown_photos=("sex_unknown", "sum"))
    order = [split for split in SPLIT_ORDER if split in table.index.get_level_values(0)]
    return table.reindex(order, level=0).round({"age_mean": 1})


def plot_split_distributions(conversion: Conversion) -> Figure:
    """Return a figure: photos per split and class, age by split and class, and sex by split."""
    examples = conversion.examples.copy()
    examples["age"] = pd.to_numeric(examples["age"], errors="coerce")
    splits = [split for split in SPLIT_ORDER if split in set(examples["split"])]
    classes = [label for label in conversion.labels.names if label in set(examples["label"])]
    figure = Figure(figsize=(15, 4), layout="constrained")
    counts_axis, age_axis, sex_axis = figure.subplots(1, 3)

    counts = examples.groupby(["split", "label"]).size().unstack(fill_value=0).reindex(index=splits, columns=classes, fill_value=0)
    counts.plot.bar(ax=counts_axis, rot=0)
    counts_axis.set(title="Photos per split and class", xlabel="split", ylabel="photos")

    data, names = [], []
    for split in splits:
        for label in classes:
            ages = examples[(examples["split"] == split) & (examples["label"] == label)]["age"].dropna()
            if len(ages):
                data.append(ages.to_numpy())
                names.append(f"{split}\n{label[:12]}")
    if data:
        age_axis.boxplot(data, tick_labels=names)
        age_axis.tick_params(axis="x", labelsize=7)
    age_axis.set(title="Age by split and class (photos with a known age)", ylabel="age (years)")

    sexes = examples.assign(sex=examples["sex"].replace("", "unknown")).groupby(["split", "sex"]).size()
    sexes.unstack(fill_value=0).reindex(index=splits, fill_value=0).plot.bar(ax=sex_axis, rot=0, stacked=True)
    sex_axis.set(title="Sex by split", xlabel="split", ylabel="photos")
    return figure


def show_split_distributions(conversion: Conversion) -> None:
    """Display the split distribution figure in the notebook, marked as a plot so reports keep it."""
    show_figure(plot_split_distributions(conversion))


def example_table(conversion: Conversion, *, count: int, show_photos: bool = False) -> pd.DataFrame:
    """Return the first `count` examples of each split (no photos); with `show_photos`, also display them."""
    examples = conversion.examples
    shown = pd.concat([examples[examples["split"] == split].head(count) for split in SPLIT_ORDER])
    if show_photos:
        for _, row in shown.iterrows():
            buffer = io.BytesIO()
            fit_within(load_image(row["image"]).image, PREVIEW_SIDE).save(buffer, format="PNG")
            show_png(buffer.getvalue(), kind=PHOTO_KIND)
    return shown[["split", "label", "subject_id", "feature_source", "instruction", "response"]].reset_index(drop=True)


def data_card_markdown(conversion: Conversion):
    """Return the written data card (data_card.md) for display in the notebook."""
    from IPython.display import Markdown

    card = next(path for path in conversion.written if path.name == "data_card.md" and path.parent.name[:5] != "fold_")
    return Markdown(card.read_text(encoding="utf-8"))
