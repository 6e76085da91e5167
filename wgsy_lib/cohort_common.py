"""Shared pieces of the cohort importers and validator: the problem report and file-name rules.

Every importer returns an `ImportResult`: the manifest rows it could build (see wgsy_lib/manifest.py
for the format), the data root they are relative to, and a problem table listing every file or
record it could not turn into a row. `validate_cohort` then checks the rows themselves (missing
files, unreadable images, exact duplicate photos, unknown labels, subjects with conflicting labels)
and adds its own problems to the same table format:

    row         line number of the row in the manifest CSV that was checked (the header is line 1,
                so the first photo is line 2); empty for files the importer never made a row of
    image       image path relative to the data root (or the file or record that failed)
    subject_id  the row's subject, where known
    problem     a short code: missing_file, unreadable_image, duplicate_image, unknown_label, ...
    detail      what is wrong and what to do about it
    action      excluded (the row is not in the clean manifest) or kept

docs/cohort.md describes the importers, the UTKFace coding and the subject-id rules.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import DataError
from .log import log_written

PROBLEM_COLUMNS = ["row", "image", "subject_id", "problem", "detail", "action"]
# Extensions Pillow decodes out of the box; compared in lower case, so .JPG and .Jpeg count.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
# Files that operating systems and archivers leave in photo folders; skipped and counted, not reported.
SYSTEM_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
SYSTEM_FOLDER_NAMES = frozenset({"__macosx", "@eadir", "$recycle.bin"})


@dataclass
class ImportResult:
    """The outcome of one importer: manifest rows, their data root, and the problems found."""

    frame: pd.DataFrame
    data_root: Path
    problems: list[dict[str, Any]] = field(default_factory=list)
    skipped_system_files: int = 0
    card: dict[str, Any] = field(default_factory=dict)

    def problem_frame(self) -> pd.DataFrame:
        return problems_frame(self.problems)


def problem(problem_code: str, detail: str, *, image: str = "", subject_id: str = "", row: int | str = "",
            action: str = "excluded") -> dict[str, Any]:
    """Build one row of the problem report."""
    return {"row": row, "image": image, "subject_id": subject_id, "problem": problem_code, "detail": detail,
            "action": action}


def problems_frame(problems: list[dict[str, Any]]) -> pd.DataFrame:
    """Turn problem rows into a table with the report's columns, in a stable order."""
    return pd.DataFrame(problems, columns=PROBLEM_COLUMNS)


def write_problems(problems: pd.DataFrame, path: str | Path) -> Path:
    """Write the problem report CSV (written even when empty, so a clean run leaves a record)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    problems.reindex(columns=PROBLEM_COLUMNS).to_csv(path, index=False, encoding="utf-8")
    log_written(path, f"cohort problem report ({len(problems)} problems)")
    return path


def summarize_problems(problems: pd.DataFrame) -> str:
    """Return the problem counts as one line, for example '3 missing_file, 1 duplicate_image'."""
    counts = Counter(problems["problem"]) if len(problems) else Counter()
    return ", ".join(f"{count} {name}" for name, count in counts.most_common()) or "no problems"


def raise_if_problems(problems: pd.DataFrame, report_path: str | Path | None, *, what: str = "cohort") -> None:
    """Raise DataError listing the problem counts and the report path when `problems` is not empty (strict mode)."""
    if not len(problems):
        return
    where = f"; every problem is listed with its row in {report_path}" if report_path else ""
    raise DataError(f"{what}: strict mode stops on any problem, and {len(problems)} were found "
                    f"({summarize_problems(problems)}){where}. Fix them, or run without strict mode to "
                    "exclude the bad rows.")


def is_system_file(name: str) -> bool:
    """True for hidden files, AppleDouble `._` files and OS thumbnails, which are never photos."""
    return name.startswith(".") or name.lower() in SYSTEM_FILE_NAMES


def is_system_folder(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FOLDER_NAMES


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


