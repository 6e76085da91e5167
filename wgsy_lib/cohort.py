"""Building and checking a cohort: importers that write the manifest, and its validation.

Every importer (`import_folders`, `import_utkface`, `import_legacy`) returns an `ImportResult`: the
manifest rows it could build (format in wgsy_lib/manifest.py), the data root they are relative to,
and a problem table listing every file or record it could not turn into a row. `validate_cohort`
then checks the rows (missing files, unreadable images, exact duplicate photos, unknown labels,
subjects with conflicting labels) and reports in the same table format; see
wgsy_lib/cohort_common.py for its columns and docs/cohort.md for the whole picture.
"""

from .cohort_common import (IMAGE_EXTENSIONS, PROBLEM_COLUMNS, ImportResult, problem, problems_frame,
                            raise_if_problems, summarize_problems, write_problems)
from .cohort_import import import_folders, import_utkface, merge_manifests
from .cohort_legacy import import_legacy, map_features
from .cohort_validate import validate_cohort

__all__ = [
    "IMAGE_EXTENSIONS", "PROBLEM_COLUMNS", "ImportResult", "import_folders", "import_legacy", "import_utkface",
    "map_features", "merge_manifests", "problem", "problems_frame", "raise_if_problems", "summarize_problems",
    "validate_cohort", "write_problems",
]
