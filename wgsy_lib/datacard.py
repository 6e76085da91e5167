"""The data card: what went into each split, and where patients and controls differ.

A model can learn a shortcut instead of the syndrome when controls differ from patients in a way the
photo shows (age, sex, camera and source). The card counts photos and people per split and class,
summarises age, sex and source per class, and compares each patient class with the controls: the
standardised mean difference (SMD) of age, and chi-square tests of sex and source. Large differences
become warnings in the card and the log.

Written as data_card.json (for tools) and data_card.md (for people), beside the JSONL files.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency

from .log import log_written
from .matching import subject_table

logger = logging.getLogger(__name__)

# |SMD| above this is flagged. 0.25 is a common rule of thumb for covariate balance; stricter
# studies use 0.1. Age is compared per person (median age over their photos).
SMD_WARNING = 0.25
# Chi-square p-values below this are flagged (sex and source distributions differ).
P_WARNING = 0.05
CARD_VERSION = 1


def standardised_mean_difference(first: Sequence[float], second: Sequence[float]) -> float | None:
    """Return (mean1 - mean2) / sqrt((var1 + var2) / 2), or None when either side has under two values
    or both sides have no spread (then compare the means directly)."""
    first = np.asarray([value for value in first if not _missing(value)], dtype=float)
    second = np.asarray([value for value in second if not _missing(value)], dtype=float)
    if len(first) < 2 or len(second) < 2:
        return None
    pooled = math.sqrt((first.var(ddof=1) + second.var(ddof=1)) / 2)
    difference = float(first.mean() - second.mean())
    if pooled == 0:
        return 0.0 if difference == 0 else None
    return difference / pooled


def chi_square_p(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Return the chi-square p-value that two groups share one category distribution (empty values
    ignored), or None when there are fewer than two categories or an empty group."""
    first = [value for value in first if value]
    second = [value for value in second if value]
    categories = sorted(set(first) | set(second))
    if len(categories) < 2 or not first or not second:
        return None
    table = np.array([[first.count(category) for category in categories],
                      [second.count(category) for category in categories]])
    return float(chi2_contingency(table)[1])


def build_data_card(examples: pd.DataFrame, *, class_order: Sequence[str], control_label: str | None,
                    duplicates: Mapping[str, Any] | None = None, problems: pd.DataFrame | None = None,
                    matching: pd.DataFrame | None = None, parameters: Mapping[str, Any] | None = None,
                    folds: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the data card of converted examples (one row per photo with split, label, subject_id,
    age, sex and source)."""
    classes = [label for label in class_order if label in set(examples["label"])]
    splits = [split for split in ("train", "val", "test") if split in set(examples["split"])]
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "classes": classes,
        "splits": splits,
        "photos": _count_table(examples, splits, classes, unit="photo"),
        "subjects": _count_table(examples, splits, classes, unit="subject"),
        "by_class": {label: _describe_class(examples[examples["label"] == label]) for label in classes},
        "control_label": control_label,
        "comparisons": _compare_with_controls(examples, classes, control_label),
        "duplicates": dict(duplicates or {}),
        "problems": _problem_counts(problems),
        "matching": None if matching is None else matching.to_dict(orient="records"),
        "folds": dict(folds) if folds else None,
        "parameters": dict(parameters or {}),
    }
    card["warnings"] = _warnings(card)
    for warning in card["warnings"]:
        logger.warning("data card: %s", warning)
    return card


def write_data_card(card: Mapping[str, Any], folder: str | Path) -> tuple[Path, Path]:
    """Write data_card.json and data_card.md into `folder`; return both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "data_card.json"
    json_path.write_text(json.dumps(card, indent=2, ensure_ascii=False, default=_json_default) + "\n", encoding="utf-8")
    log_written(json_path, "data card (JSON)")
    markdown_path = folder / "data_card.md"
    markdown_path.write_text(render_markdown(card), encoding="utf-8")
    log_written(markdown_path, "data card (Markdown)")
    return json_path, markdown_path


def render_markdown(card: Mapping[str, Any]) -> str:
    """Return the data card as Markdown tables."""
    lines = ["# Data card", ""]
    if card["warnings"]:
        lines += ["## Warnings", ""] + [f"- {warning}" for warning in card["warnings"]] + [""]
    for unit in ("photos", "subjects"):
        lines += [f"## {unit.capitalize()} per split and class", "", _markdown_table(pd.DataFrame(card[unit]).T.rename_axis("split")), ""]
    lines += ["## Age, sex and source by class (per person)", ""]
    rows = []
    for label, summary in card["by_class"].items():
        age = summary["age"]
        rows.append({"class": label, "people": summary["subjects"], "photos": summary["photos"],
                     "age mean (sd)": "n/a" if age["mean"] is None else f"{age['mean']:.1f} ({age['sd'] or 0:.1f})",
                     "age range": "n/a" if age["min"] is None else f"{age['min']:g}-{age['max']:g}",
                     "age missing": age["missing"],
                     "sex f/m/unknown": f"{summary['sex']['female']}/{summary['sex']['male']}/{summary['sex']['unknown']}",
                     "sources": ", ".join(f"{source} {count}" for source, count in summary["source"].items())})
    lines += [_markdown_table(pd.DataFrame(rows).set_index("class")), ""]
    if card["comparisons"]:
        lines += [f"## Patients against controls ({card['control_label']})", "",
                  f"Age SMD flagged above {SMD_WARNING}; chi-square p flagged below {P_WARNING}.", "",
                  _markdown_table(pd.DataFrame(card["comparisons"]).set_index("class")), ""]
    if card["duplicates"]:
        lines += ["## Duplicate photos", ""] + [f"- {key}: {value}" for key, value in card["duplicates"].items()] + [""]
    if card["problems"]:
        lines += ["## Rows with problems", ""] + [f"- {key}: {value}" for key, value in card["problems"].items()] + [""]
    if card["matching"]:
        lines += ["## Control matching (people per stratum)", "", _markdown_table(pd.DataFrame(card["matching"])), ""]
    if card["folds"]:
        lines += ["## Cross-validation folds", ""] + [f"- {key}: {value}" for key, value in card["folds"].items()] + [""]
    lines += ["## Parameters", "", "```json", json.dumps(card["parameters"], indent=2, ensure_ascii=False), "```", ""]
    return "\n".join(lines)


def _count_table(examples: pd.DataFrame, splits: list[str], classes: list[str], *, unit: str) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for split in splits:
        rows = examples[examples["split"] == split]
        table[split] = {}
        for label in classes:
            selected = rows[rows["label"] == label]
            table[split][label] = int(len(selected) if unit == "photo" else selected["subject_id"].nunique())
    return table


def _describe_class(rows: pd.DataFrame) -> dict[str, Any]:
    subjects = subject_table(rows)
    ages = subjects["age"].dropna()
    return {
        "photos": int(len(rows)),
        "subjects": int(len(subjects)),
        "age": {"mean": _round(ages.mean()) if len(ages) else None, "sd": _round(ages.std()) if len(ages) > 1 else None,
                "min": _round(ages.min()) if len(ages) else None, "max": _round(ages.max()) if len(ages) else None,
                "missing": int(subjects["age"].isna().sum())},
        "sex": {"female": int((subjects["sex"] == "female").sum()), "male": int((subjects["sex"] == "male").sum()),
                "unknown": int((subjects["sex"] == "").sum())},
        "source": {str(source): int(count) for source, count in
                   rows.groupby("subject_id")["source"].first().value_counts().sort_index().items()},
    }


def _compare_with_controls(examples: pd.DataFrame, classes: list[str], control_label: str | None) -> list[dict[str, Any]]:
    if not control_label or control_label not in classes or len(classes) < 2:
        return []
    subjects = subject_table(examples)
    sources = examples.groupby("subject_id")["source"].first()
    subjects["source"] = subjects["subject_id"].map(sources).fillna("")
    controls = subjects[subjects["label"] == control_label]
    groups = [(label, subjects[subjects["label"] == label]) for label in classes if label != control_label]
    if len(groups) > 1:
        groups.append(("all patients", subjects[subjects["label"] != control_label]))
    comparisons = []
    for name, patients in groups:
        comparisons.append({
            "class": name,
            "age_mean": _round(patients["age"].mean(), 1),
            "control_age_mean": _round(controls["age"].mean(), 1),
            "age_smd": _round(standardised_mean_difference(patients["age"].tolist(), controls["age"].tolist())),
            "sex_p": _round(chi_square_p(patients["sex"].tolist(), controls["sex"].tolist()), 4),
            "source_p": _round(chi_square_p(patients["source"].tolist(), controls["source"].tolist()), 4),
            "patients_sources": ", ".join(sorted(set(patients["source"]) - {""})),
            "controls_sources": ", ".join(sorted(set(controls["source"]) - {""})),
        })
    return comparisons


def _warnings(card: Mapping[str, Any]) -> list[str]:
    warnings = []
    control = card["control_label"]
    for row in card["comparisons"]:
        smd = row["age_smd"]
        if smd is None and None not in (row["age_mean"], row["control_age_mean"]) and row["age_mean"] != row["control_age_mean"]:
            smd = math.copysign(math.inf, row["age_mean"] - row["control_age_mean"])
        if smd is not None and abs(smd) > SMD_WARNING:
            older = "older" if smd > 0 else "younger"
            warnings.append(f"{row['class']} are {older} than {control} (age SMD {smd:+.2f}); the model may learn age "
                            "instead of the syndrome. Consider match_controls: true.")
        if row["sex_p"] is not None and row["sex_p"] < P_WARNING:
            warnings.append(f"sex distribution of {row['class']} differs from {control} (chi-square p = {row['sex_p']:.3g}).")
        if row["source_p"] is not None and row["source_p"] < P_WARNING:
            warnings.append(f"photo sources of {row['class']} ({row['patients_sources']}) differ from {control} "
                            f"({row['controls_sources']}) (chi-square p = {row['source_p']:.3g}); the model may learn "
                            "the source (camera, lighting, cropping) instead of the syndrome.")
    for split, counts in card["photos"].items():
        missing = [label for label, count in counts.items() if count == 0]
        if missing:
            warnings.append(f"split {split} has no photos of {', '.join(missing)}.")
    return warnings


def _problem_counts(problems: pd.DataFrame | None) -> dict[str, int]:
    if problems is None or problems.empty:
        return {}
    return {f"{problem} ({action})": int(count) for (problem, action), count in
            problems.groupby(["problem", "action"]).size().sort_index().items()}


def _markdown_table(frame: pd.DataFrame) -> str:
    frame = frame.reset_index() if frame.index.name or not isinstance(frame.index, pd.RangeIndex) else frame
    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join("" if _missing(value) else str(value) for value in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _round(value: Any, digits: int = 3) -> float | None:
    if value is None or _missing(value) or math.isinf(value):
        return None
    return round(float(value), digits)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"cannot write {type(value).__name__} to the data card")
