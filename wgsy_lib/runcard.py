"""The run card: one JSON file per training run that records what produced the adapter.

It records every parameter, the sha256 of each data file, the versions of the libraries that shape
the result, the git commit (and whether the tree had uncommitted changes), the hardware, the wall
time and the peak memory. A run card is written when training starts and rewritten when it ends,
so a crashed run still leaves a record of what was attempted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import logging
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

from .log import log_written
from .paths import repo_root

logger = logging.getLogger(__name__)

RUN_CARD_FILE = "run_card.json"
# The packages whose version can change a training result or the files it writes.
TRACKED_PACKAGES = ("wgsy", "torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets",
                    "tokenizers", "safetensors", "pillow", "numpy", "papermill")
_CHUNK_BYTES = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprints(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """Return {path: {sha256, bytes}} for each existing data file."""
    fingerprints = {}
    for path in paths:
        path = Path(path)
        if path.is_file():
            fingerprints[str(path)] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    return fingerprints


def library_versions(packages: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Return the installed version of each package, None for those not installed."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_state(root: Path | None = None) -> dict[str, Any]:
    """Return the commit of the checkout and whether tracked files have uncommitted changes."""
    root = root or repo_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        logger.warning("could not read the git commit of %s; the run card records it as unknown", root)
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def build_run_card(*, stage: str, parameters: Mapping[str, Any], data_files: Iterable[str | Path],
                   hardware: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return a new run card for a run that starts now."""
    return {
        "stage": stage,
        "status": "running",
        "started_at": _now(),
        "finished_at": None,
        "wall_time_s": None,
        "peak_memory_bytes": None,
        "parameters": dict(parameters),
        "data_files": data_fingerprints(data_files),
        "libraries": library_versions(),
        "git": git_state(),
        "hardware": dict(hardware),
        **dict(extra or {}),
    }


def finish_run_card(card: dict[str, Any], *, status: str, wall_time_s: float, peak_memory_bytes: int,
                    **fields: Any) -> dict[str, Any]:
    """Record the end of the run in `card` and return it."""
    card.update(status=status, finished_at=_now(), wall_time_s=round(wall_time_s, 1),
                peak_memory_bytes=peak_memory_bytes, **fields)
    return card


def write_run_card(card: Mapping[str, Any], run_dir: str | Path) -> Path:
    """Write `card` as run_card.json in `run_dir` and return its path."""
    path = Path(run_dir) / RUN_CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    log_written(path, f"run card ({card.get('status')})")
    return path


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
