"""The annotation store: an append-only JSONL file, one line per annotation attempt.

Each line is one JSON object (an `AnnotationRecord`). The store is the resume state of 01_annotate:
a record is identified by `key`, a hash of (image content hash, backend, model, prompt version,
mode), and a rerun skips keys that already have a final record. Lines are written whole with a
single write and flushed, so killing the process loses at most the requests in flight; a partial
last line left by a crash mid-write is cut off (and logged) the next time the store is opened.

Modes: `blind` (the annotator saw only the photo) and `label_conditioned` (it was told the
diagnosis; for augmentation only, never for validation or test inputs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError

logger = logging.getLogger(__name__)

MODES = ("blind", "label_conditioned")
STATUSES = ("ok", "invalid", "truncated", "refused", "error")
# Statuses worth another request on a rerun; the rest are final answers of the model.
RETRYABLE_STATUSES = frozenset({"error", "truncated"})


def annotation_key(image_sha256: str, backend: str, model: str, prompt_version: str, mode: str) -> str:
    """Return the identity of one annotation: the same photo, asked the same way of the same model."""
    joined = "\x1f".join((image_sha256, backend, model, prompt_version, mode))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32]


@dataclass
class AnnotationRecord:
    """One annotation attempt of one photo."""

    image_sha256: str
    image: str
    backend: str
    model: str
    prompt_version: str
    mode: str
    status: str
    features: dict[str, str] | None = None
    explanation: str | None = None
    raw_text: str | None = None
    reason: str | None = None
    usage: dict[str, int] | None = None
    seconds: float | None = None
    out_of_schema: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    key: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DataError(f"annotation mode {self.mode!r} is invalid; expected one of {MODES}")
        if self.status not in STATUSES:
            raise DataError(f"annotation status {self.status!r} is invalid; expected one of {STATUSES}")
        if not self.key:
            self.key = annotation_key(self.image_sha256, self.backend, self.model, self.prompt_version, self.mode)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AnnotationRecord":
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)


class AnnotationStore:
    """Append-only JSONL store of `AnnotationRecord`s; safe to append from several threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[AnnotationRecord]:
        return iter(self.read())

    def read(self) -> list[AnnotationRecord]:
        """Return every complete record in file order; a partial last line is ignored with a warning."""
        if not self.path.exists():
            return []
        records = []
        with open(self.path, "rb") as handle:
            lines = handle.read().split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(AnnotationRecord.from_dict(json.loads(line)))
            except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as error:
                if number == len(lines):
                    logger.warning("annotation store %s: ignoring a partial last line (%d bytes) left by an interrupted write",
                                   self.path, len(line))
                    continue
                raise DataError(f"annotation store {self.path}, line {number}: not a valid annotation record ({error}); "
                                "remove or fix that line") from None
        return records

    def latest(self) -> dict[str, AnnotationRecord]:
        """Return the newest record of each key."""
        return {record.key: record for record in self.read()}

    def append(self, record: AnnotationRecord) -> None:
        """Append one record as one whole line, flushed to disk before returning."""
        line = (record.to_json() + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._repair_partial_tail()
            with open(self.path, "ab") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())

    def _repair_partial_tail(self) -> None:
        # A crash in the middle of a write can leave a last line without its newline. Cut it, so the
        # next record starts on a line of its own instead of gluing onto the broken one.
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) == b"\n":
                return
            content = handle.seek(0) or handle.read()
            keep = content.rfind(b"\n") + 1
            handle.truncate(keep)
        logger.warning("annotation store %s: removed a partial last line (%d bytes) left by an interrupted write",
                       self.path, len(content) - keep)
