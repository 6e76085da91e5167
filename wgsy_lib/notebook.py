"""Start-up of every stage notebook: logging and validated parameters.

A notebook's second code cell is always

    config = start_notebook(TrainConfig, globals())

which turns the parameters cell (plus anything papermill injected) into a validated config object,
or stops the run with a message naming the bad parameter.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, TypeVar

from .config import StageConfig
from .log import setup_logging

logger = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT", bound=StageConfig)

# Set by the papermill runner: the notebook runs without a person watching, so widgets are off and
# progress bars update rarely.
HEADLESS_ENV = "WGSY_HEADLESS"


def start_notebook(config_class: type[ConfigT], namespace: Mapping[str, Any]) -> ConfigT:
    """Set up logging, validate the notebook's parameters and log them; return the config."""
    setup_logging()
    config = config_class.from_namespace(namespace)
    for name, value in config.to_dict().items():
        logger.info("parameter %s = %r", name, value)
    return config


def is_headless() -> bool:
    """Return True when the notebook runs through the WGSY papermill runner (no one to click widgets)."""
    return os.environ.get(HEADLESS_ENV, "") not in ("", "0", "false")
