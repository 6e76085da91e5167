"""Reading the JSONL files 02_convert writes (one JSON object per line), with errors naming the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError

REWRITE_HINT = "regenerate the file with 02_convert"


def iter_json_lines(path: str | Path, *, hint: str = REWRITE_HINT) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for every non-blank line; raise DataError naming the first bad line.

    `hint` ends each message with what to do about a bad line.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path} line {number} is not valid JSON ({error}); {hint}") from None
                if not isinstance(value, dict):
                    raise DataError(f"{path} line {number} is a JSON {type(value).__name__}, expected one object "
                                    f"per line; {hint}")
                yield number, value
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error}); {hint}") from None
