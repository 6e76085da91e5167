"""Where files live: the repository root, the outputs folder, and path resolution.

Relative paths in parameters resolve from the repository root, never from the process's working
directory, because papermill starts the kernel in the caller's folder and a run must write the same
files wherever it was started.
"""

from __future__ import annotations

import os
from pathlib import Path

# The package sits directly below the repository root (installed in editable mode by setup.sh).
# WGSY_ROOT overrides it, for an installed copy that runs against a checkout elsewhere.
PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """Return the repository root: WGSY_ROOT if set, else the folder above the package."""
    override = os.environ.get("WGSY_ROOT")
    if override:
        return Path(override).expanduser().resolve()
    return PACKAGE_DIR.parent


def resolve_path(path: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None) -> Path:
    """Return `path` as an absolute path; relative paths resolve from `base`, else the repository root."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate
    return (Path(base) if base is not None else repo_root()) / candidate


def params_dir() -> Path:
    return repo_root() / "params"


def outputs_dir() -> Path:
    return repo_root() / "outputs"


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def cache_dir() -> Path:
    """Return the folder for assets the project builds for itself (tiny model, phantom cohort).

    WGSY_CACHE overrides it; the default lives under outputs/ so it is ignored by git.
    """
    override = os.environ.get("WGSY_CACHE")
    if override:
        return Path(override).expanduser().resolve()
    return outputs_dir() / "cache"
