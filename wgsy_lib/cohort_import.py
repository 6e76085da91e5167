"""Importers that build a manifest from a folder per class or from UTKFace file names, and merging.

Layouts (docs/cohort.md has examples):

- folder per class: `root/<class folder>/<photo>` or `root/<class folder>/<subject folder>/<photo>`;
  class folder names are normalised through labels.yaml, and a subject folder names the person.
- UTKFace: `[age]_[gender]_[race]_[date&time].jpg`, optionally with the `.jpg.chip.jpg` tail of the
  aligned crops, anywhere below the root. All of them become healthy controls.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from .cohort_common import ImportResult, is_image_name, is_system_file, is_system_folder, problem
from .errors import DataError
from .labels import LabelSet
from .manifest import MANIFEST_COLUMNS

logger = logging.getLogger(__name__)

UTKFACE_SOURCE = "UTKFace"
UTKFACE_LABEL = "healthy control"
# UTKFace's file-name coding, as its authors publish it with the dataset. Gender 0 is male and 1 female.
# Race 0 is White, 1 Black, 2 Asian, 3 Indian, 4 Others (Hispanic, Latino, Middle Eastern). Ages run 0-116.
UTKFACE_SEX = {0: "male", 1: "female"}
UTKFACE_ETHNICITY = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Others"}
UTKFACE_MAX_AGE = 116
_UTKFACE_NAME = re.compile(r"(?P<age>\d+)_(?P<gender>\d+)_(?P<race>\d+)_(?P<datetime>\d+)")
_UTKFACE_CHIP_TAIL = re.compile(r"\.jpg\.chip$", re.IGNORECASE)


def import_folders(root: str | Path, labels: LabelSet, *, subject_pattern: str | None = None,
                   source: str | None = None) -> ImportResult:
    """Build manifest rows from `root/<class folder>/[<subject folder>/]<photo>`.

    `subject_pattern` is a regular expression with a named group `subject`, searched in the file
    name without extension of photos that sit directly in a class folder (for example
    `^(?P<subject>[^_]+)_` for `P017_front.jpg`). Photos it does not match are reported and excluded.
    """
    root = _check_root(root)
    pattern = _compile_subject_pattern(subject_pattern)
    source = source or root.name
    result = ImportResult(frame=pd.DataFrame(columns=MANIFEST_COLUMNS), data_root=root)
    rows: list[dict[str, Any]] = []
    own_subject_photos = 0

    for entry in sorted(root.iterdir(), key=lambda path: path.name):
        if entry.is_file():
            if is_system_file(entry.name):
                result.skipped_system_files += 1
            else:
                result.problems.append(problem(
                    "not_in_class_folder", f"{entry.name} lies directly in the data root; move it into the folder "
                    "of its class", image=_relative(entry, root)))
            continue
        if not entry.is_dir() or is_system_folder(entry.name):
            continue
        label = labels.normalize(entry.name)
        if not label.known:
            count = sum(1 for _ in _walk_files(entry))
            result.problems.append(problem(
                "unknown_class_folder",
                f"class folder {entry.name!r} ({count} files) maps to no class in {labels.source} ({label.reason}); "
                "rename the folder to a class name or add the name as a synonym in labels.yaml",
                image=_relative(entry, root)))
            logger.warning("class folder %s maps to no class (%s); its %d files are not imported", entry, label.reason, count)
            continue
        for photo in _walk_files(entry):
            if is_system_file(photo.name):
                result.skipped_system_files += 1
                continue
            relative = _relative(photo, root)
            if not is_image_name(photo.name):
                result.problems.append(problem(
                    "not_an_image_file", f"extension {photo.suffix or '(none)'!r} is not an image format WGSY reads "
                    "(jpg, jpeg, png, webp, bmp, tif, gif); convert it or remove it", image=relative))
                continue
            subject_id, kind = _folder_subject(photo, entry, pattern)
            if subject_id is None:
                result.problems.append(problem(
                    "subject_pattern_mismatch", f"subject pattern {subject_pattern!r} does not match the file name "
                    f"{photo.stem!r}; rename the photo or fix the pattern", image=relative))
                continue
            own_subject_photos += kind == "own"
            rows.append(_row(relative, subject_id, label.label, entry.name, source))

    if own_subject_photos:
        logger.warning(
            "%d photos sit directly in their class folder with no subject pattern, so each counts as its own "
            "subject; a split then cannot keep two photos of one person together. Put each person's photos in a "
            "subject folder or pass a subject pattern.", own_subject_photos)
    _log_skipped(result.skipped_system_files, root)
    result.frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    result.card = {"importer": "folders", "source": source, "subject_pattern": subject_pattern}
    logger.info("imported %d photos from %s (%d problems)", len(rows), root, len(result.problems))
    return result


def import_utkface(root: str | Path, *, source: str = UTKFACE_SOURCE) -> ImportResult:
    """Build manifest rows of healthy controls from UTKFace file names anywhere below `root`.

    Names that do not fit `age_gender_race_datetime` exactly (a missing field, a non-numeric field,
    gender other than 0/1, race outside 0-4, age above 116) are reported and excluded, never guessed.
    UTKFace has no identity labels, so each photo is its own subject `utkface:<name>`.
    """
    root = _check_root(root)
    result = ImportResult(frame=pd.DataFrame(columns=MANIFEST_COLUMNS), data_root=root)
    rows: list[dict[str, Any]] = []
    for photo in _walk_files(root):
        if is_system_file(photo.name):
            result.skipped_system_files += 1
            continue
        relative = _relative(photo, root)
        if not is_image_name(photo.name):
            result.problems.append(problem("not_an_image_file", f"extension {photo.suffix or '(none)'!r} is not an "
                                           "image format WGSY reads; remove it", image=relative))
            continue
        parsed = parse_utkface_name(photo.name)
        if isinstance(parsed, str):
            result.problems.append(problem("bad_utkface_name", parsed, image=relative))
            continue
        row = _row(relative, f"utkface:{parsed['stem']}", UTKFACE_LABEL, UTKFACE_LABEL, source)
        row.update(age=parsed["age"], sex=parsed["sex"], ethnicity=parsed["ethnicity"])
        rows.append(row)

    _log_skipped(result.skipped_system_files, root)
    result.frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    result.card = {"importer": "utkface", "source": source,
                   "coding": {"gender": UTKFACE_SEX, "race": UTKFACE_ETHNICITY}}
    logger.info("imported %d UTKFace photos from %s (%d names did not fit)", len(rows), root,
                sum(p["problem"] == "bad_utkface_name" for p in result.problems))
    return result


def parse_utkface_name(name: str) -> dict[str, Any] | str:
    """Parse a UTKFace file name; return its fields, or the reason it does not fit."""
    stem = _UTKFACE_CHIP_TAIL.sub("", Path(name).stem)
    expected = "expected [age]_[gender]_[race]_[date&time].jpg with whole numbers, for example 25_1_2_20170116174525125.jpg"
    found = _UTKFACE_NAME.fullmatch(stem)
    if found is None:
        fields = stem.split("_")
        return f"file name {name!r} has {len(fields)} field(s) {fields}; {expected}"
    age, gender, race = int(found["age"]), int(found["gender"]), int(found["race"])
    if age > UTKFACE_MAX_AGE:
        return f"file name {name!r}: age {age} is above {UTKFACE_MAX_AGE}, the largest in UTKFace; {expected}"
    if gender not in UTKFACE_SEX:
        return f"file name {name!r}: gender {gender} is not 0 (male) or 1 (female); {expected}"
    if race not in UTKFACE_ETHNICITY:
        return f"file name {name!r}: race {race} is not one of 0-4 (White, Black, Asian, Indian, Others); {expected}"
    return {"stem": stem, "age": age, "sex": UTKFACE_SEX[gender], "ethnicity": UTKFACE_ETHNICITY[race]}


def merge_manifests(parts: list[tuple[pd.DataFrame, str | Path]]) -> tuple[pd.DataFrame, Path]:
    """Combine manifests with different data roots into one, relative to their common parent folder.

    Each part is (manifest frame, its data root). Image paths are rewritten relative to the deepest
    folder that contains every root; the columns are the union, and missing free columns stay empty.
    """
    if not parts:
        raise DataError("merge needs at least one manifest")
    roots = [Path(root).resolve() for _, root in parts]
    try:
        common = Path(os.path.commonpath([str(root) for root in roots]))
    except ValueError:
        raise DataError(f"the data roots {[str(r) for r in roots]} share no common folder (different drives?); "
                        "copy the photos under one folder first") from None
    frames = []
    for (frame, _), root in zip(parts, roots):
        prefix = root.relative_to(common).as_posix()
        moved = frame.copy()
        if prefix != ".":
            moved["image"] = [f"{prefix}/{image}" for image in moved["image"]]
        frames.append(moved)
    merged = pd.concat(frames, ignore_index=True)
    for column in merged.columns:
        if column != "age":  # the only numeric column; its gaps stay NaN (unknown age)
            merged[column] = merged[column].astype(object).where(merged[column].notna(), "")
    logger.info("merged %d manifests (%d photos) under the common data root %s", len(parts), len(merged), common)
    return merged, common


def _check_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data folder {path} not found or not a folder; pass the folder that holds the photos")
    return path.resolve()


def _compile_subject_pattern(subject_pattern: str | None) -> re.Pattern[str] | None:
    if not subject_pattern:
        return None
    try:
        pattern = re.compile(subject_pattern)
    except re.error as error:
        raise DataError(f"subject pattern {subject_pattern!r} is not a valid regular expression ({error})") from None
    if "subject" not in pattern.groupindex:
        raise DataError(f"subject pattern {subject_pattern!r} has no named group 'subject'; write it like "
                        "^(?P<subject>[^_]+)_ so WGSY knows which part of the file name is the person")
    return pattern


def _folder_subject(photo: Path, class_folder: Path, pattern: re.Pattern[str] | None) -> tuple[str | None, str]:
    # A subject folder wins; deeper folders below it still belong to that subject.
    parts = photo.relative_to(class_folder).parts
    if len(parts) > 1:
        return parts[0], "folder"
    if pattern is not None:
        found = pattern.search(photo.stem)
        if found is None or not found["subject"]:
            return None, "pattern"
        return found["subject"], "pattern"
    return f"{class_folder.name}/{photo.stem}", "own"


def _walk_files(folder: Path) -> Iterator[Path]:
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if not is_system_folder(name))
        for name in sorted(files):
            yield Path(directory) / name


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _row(image: str, subject_id: str, label: str, label_raw: str, source: str) -> dict[str, Any]:
    return {"image": image, "subject_id": subject_id, "label": label, "label_raw": label_raw, "source": source,
            "age": None, "sex": "", "ethnicity": "", "split": ""}


def _log_skipped(count: int, root: Path) -> None:
    if count:
        logger.info("skipped %d hidden or system files (.DS_Store, ._ AppleDouble, Thumbs.db) below %s", count, root)
