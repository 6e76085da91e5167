"""Agreement of annotations with reference annotations: per feature, the fraction of photos on
which both give the same value and Cohen's kappa (agreement corrected for chance, scikit-learn).

Reference annotations come from a file (`reference` parameter) or from the manifest itself:

- CSV: a column `image` (path as in the manifest) or `image_sha256`, and one column per feature,
  named as the feature or with a `true_` or `feature_` prefix;
- JSONL: one object per photo with `image` (or `image_sha256`) and a `features` mapping;
- no file: manifest columns named like the features (with or without those prefixes), as the
  phantom cohort writes its true values.

A photo whose annotation is not `ok`, or whose reference value is empty, does not count for that
feature. An annotator's `uncertain` counts as a disagreement and is also counted on its own.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score

from .errors import DataError
from .features import UNCERTAIN, FeatureSchema, load_features
from .log import log_written
from .paths import resolve_path

logger = logging.getLogger(__name__)

REFERENCE_PREFIXES = ("", "true_", "feature_")
COLUMNS = ["feature", "photos", "agreement", "kappa", "annotator_uncertain", "reference_values"]


def reference_columns(frame: pd.DataFrame, features: FeatureSchema) -> dict[str, str]:
    """Return feature name -> column of `frame` holding its reference value."""
    found = {}
    for feature in features:
        for prefix in REFERENCE_PREFIXES:
            if prefix + feature.name in frame.columns:
                found[feature.name] = prefix + feature.name
                break
    return found


def read_reference(path: str | Path, features: FeatureSchema) -> pd.DataFrame:
    """Read reference annotations into a frame with `image` or `image_sha256` and one column per feature."""
    path = resolve_path(path)
    if not path.is_file():
        raise DataError(f"reference annotations {path} not found; set reference to a CSV or JSONL file, or leave it empty")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"reference annotations {path}, line {number}: invalid JSON ({error})") from None
            rows.append({**{k: v for k, v in entry.items() if k != "features"}, **(entry.get("features") or {})})
        frame = pd.DataFrame(rows)
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "image" not in frame.columns and "image_sha256" not in frame.columns:
        raise DataError(f"reference annotations {path} need an 'image' or 'image_sha256' column; found {list(frame.columns)}")
    columns = reference_columns(frame, features)
    if not columns:
        raise DataError(f"reference annotations {path} have no column named after a feature of the schema "
                        f"(for example {features.names[0]!r} or 'true_{features.names[0]}')")
    return frame.rename(columns={column: name for name, column in columns.items()})


def feature_agreement(table: pd.DataFrame, reference: pd.DataFrame, features: FeatureSchema) -> pd.DataFrame:
    """Return per-feature agreement and Cohen's kappa between `table` (annotations) and `reference`."""
    join = "image_sha256" if "image_sha256" in reference.columns else "image"
    # A reference store may hold several records of one photo; the last one counts, as in the store.
    reference = reference.drop_duplicates(subset=join, keep="last")
    merged = table[table["status"] == "ok"].merge(reference, on=join, how="inner", suffixes=("", "_reference"))
    rows = []
    for feature in features:
        column = f"{feature.name}_reference"
        if column not in merged.columns:
            continue
        pairs = merged[[feature.name, column]].dropna()
        pairs = pairs[pairs[column].astype(str).str.strip() != ""]
        annotated, truth = pairs[feature.name].astype(str), pairs[column].astype(str)
        rows.append({
            "feature": feature.name,
            "photos": len(pairs),
            "agreement": float((annotated == truth).mean()) if len(pairs) else np.nan,
            "kappa": _kappa(truth, annotated, list(feature.values)),
            "annotator_uncertain": int((annotated == UNCERTAIN).sum()),
            "reference_values": ", ".join(sorted(truth.unique())),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def measure_agreement(config: Any, table: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Compare this run's annotations with the reference, write agreement.csv, and return the table.

    Returns None (and logs why) when there is no reference: no `reference` file and no feature
    columns in the manifest.
    """
    from .annotation_report import annotation_table

    features = load_features(config.features_file)
    table = annotation_table(config) if table is None else table
    if config.reference:
        reference = read_reference(config.reference, features)
    else:
        columns = reference_columns(table.drop(columns=features.names), features)
        if not columns:
            logger.info("no reference annotations (reference is empty and the manifest has no feature columns); "
                        "agreement not measured")
            return None
        reference = table[["image", *columns.values()]].rename(columns={c: n for n, c in columns.items()})
    result = feature_agreement(table, reference, features)
    path = config.output_path / "agreement.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(path, index=False)
    log_written(path, f"agreement with reference annotations ({len(result)} features)")
    return result


def _kappa(truth: pd.Series, annotated: pd.Series, labels: list[str]) -> float:
    if len(truth) < 2:
        return np.nan
    with warnings.catch_warnings():
        # Kappa is undefined when both raters used a single value throughout. sklearn then warns and
        # returns nan, which is the right value to report.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return float(cohen_kappa_score(truth, annotated, labels=labels))
