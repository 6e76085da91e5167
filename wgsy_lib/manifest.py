"""The cohort manifest: one row per photograph, the table every stage starts from.

Format: a UTF-8 CSV file (`manifest.csv`) with these columns, in this order, followed by any
number of free metadata columns, which every stage keeps untouched:

    image        path of the photo relative to the data root, with forward slashes
    subject_id   the person; several photos per person are normal, and splits keep them together
    label        canonical class name from params/labels.yaml, or Unknown
    label_raw    the label text as it was found (folder name, file field), kept for audit
    source       where the photo came from (a clinic, UTKFace, phantom, ...)
    age          age in years when the photo was taken; empty if not known
    sex          female, male, or empty if not known
    ethnicity    free text; empty if not known
    split        train, val or test when the user fixes the split; usually empty

The data root is, in order: the `data_root` argument, the `data_root` recorded in `cohort.json`
beside the manifest (written by the importers), or the manifest's own folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import DataError
from .log import log_written

MANIFEST_COLUMNS = ["image", "subject_id", "label", "label_raw", "source", "age", "sex", "ethnicity", "split"]
REQUIRED_COLUMNS = ["image", "subject_id", "label"]
SEX_VALUES = ("female", "male", "")
SPLIT_VALUES = ("train", "val", "test", "")
CARD_NAME = "cohort.json"


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV and check its columns and value formats; raise DataError naming the row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} not found; build one with `wgsy import` or pass the path of a manifest.csv")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"manifest {path} is not a readable UTF-8 CSV file: {error}") from None

    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(f"manifest {path} lacks required column(s) {missing}; its columns are {list(frame.columns)}. "
                        f"A manifest needs at least {REQUIRED_COLUMNS}.")
    for column in MANIFEST_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    frame = frame[MANIFEST_COLUMNS + [c for c in frame.columns if c not in MANIFEST_COLUMNS]]
    _check_values(frame, path)
    frame["age"] = pd.to_numeric(frame["age"].replace("", None), errors="coerce")
    return frame


def write_manifest(frame: pd.DataFrame, path: str | Path, *, data_root: str | Path | None = None,
                   card: dict[str, Any] | None = None) -> Path:
    """Write a manifest CSV, plus cohort.json with the data root and `card`, and log both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = frame.copy()
    for column in MANIFEST_COLUMNS:
        if column not in ordered.columns:
            ordered[column] = ""
    ordered = ordered[MANIFEST_COLUMNS + [c for c in ordered.columns if c not in MANIFEST_COLUMNS]]
    ordered["age"] = ordered["age"].map(_format_age)
    ordered.to_csv(path, index=False, encoding="utf-8")
    log_written(path, f"cohort manifest ({len(ordered)} photos)")

    if data_root is not None or card:
        content = dict(card or {})
        if data_root is not None:
            content["data_root"] = str(Path(data_root).resolve())
        card_path = path.parent / CARD_NAME
        card_path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        log_written(card_path, "cohort card")
    return path


def data_root_for(manifest_path: str | Path, data_root: str | Path | None = None) -> Path:
    """Return the folder the manifest's image paths are relative to."""
    manifest_path = Path(manifest_path)
    if data_root not in (None, ""):
        return Path(data_root).expanduser().resolve()
    card_path = manifest_path.parent / CARD_NAME
    if card_path.is_file():
        try:
            recorded = json.loads(card_path.read_text(encoding="utf-8")).get("data_root")
        except json.JSONDecodeError as error:
            raise DataError(f"cohort card {card_path} is not valid JSON ({error}); fix or delete it") from None
        if recorded:
            return Path(recorded)
    return manifest_path.parent.resolve()


def _check_values(frame: pd.DataFrame, path: Path) -> None:
    for index, row in frame.iterrows():
        where = f"manifest {path}, row {index + 2}"  # +2: the header line and 1-based numbering
        if not row["image"].strip():
            raise DataError(f"{where}: empty image path; every row needs the photo's path relative to the data root")
        if Path(row["image"]).is_absolute() or ".." in Path(row["image"]).parts:
            raise DataError(f"{where}: image path {row['image']!r} must be relative to the data root and stay inside it")
        if not row["subject_id"].strip():
            raise DataError(f"{where} ({row['image']}): empty subject_id; give every photo the id of the person in it")
        if row["sex"] not in SEX_VALUES:
            raise DataError(f"{where} ({row['image']}): sex {row['sex']!r} must be one of female, male or empty")
        if row["split"] not in SPLIT_VALUES:
            raise DataError(f"{where} ({row['image']}): split {row['split']!r} must be one of train, val, test or empty")
        if row["age"].strip():
            try:
                age = float(row["age"])
            except ValueError:
                raise DataError(f"{where} ({row['image']}): age {row['age']!r} is not a number of years") from None
            if not 0 <= age <= 120:
                raise DataError(f"{where} ({row['image']}): age {age} is outside 0-120 years")


def _format_age(value: Any) -> str:
    if value is None or value == "" or (isinstance(value, float) and pd.isna(value)):
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        # Written as found, so read_manifest names the row instead of this writer failing without one.
        return str(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"
