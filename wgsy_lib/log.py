"""One logging format for the library, the notebooks and the CLI.

The library only logs; `setup_logging` is called once by each entry point (notebook, CLI, test).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"

logger = logging.getLogger("wgsy_lib")


def setup_logging(level: str | int | None = None) -> None:
    """Send the `wgsy_lib` log to standard error with the project's format.

    The level comes from the argument, else from the WGSY_LOG_LEVEL environment variable, else INFO.
    Calling it again only changes the level, so a notebook cell can be rerun safely.
    """
    if level is None:
        level = os.environ.get("WGSY_LOG_LEVEL", "INFO")
    if isinstance(level, str):
        level = level.upper()

    root = logging.getLogger("wgsy_lib")
    root.setLevel(level)
    if not any(getattr(handler, "_wgsy", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
        handler._wgsy = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.propagate = False


def log_written(path: str | Path, what: str, *, log: logging.Logger | None = None) -> None:
    """Log that a file was written, with its path, so every artefact of a run can be found."""
    (log or logger).info("wrote %s: %s", what, path)
