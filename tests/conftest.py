"""Shared fixtures. Tests never touch the network; assets are built locally and cached."""

from __future__ import annotations

import logging
import os

import pytest

# Make every Hugging Face library refuse hub access, so a test that would download fails loudly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def labels():
    from wgsy_lib.labels import load_labels

    return load_labels()


# --- Offline assets (tiny model, phantom cohort), built once and cached under wgsy_lib.paths.cache_dir().


@pytest.fixture(scope="session")
def tiny_model_dir():
    """Folder of the tiny Gemma 3 model (default settings), loadable with the Auto classes."""
    from wgsy_lib.tiny_model import tiny_model_path

    return tiny_model_path()


@pytest.fixture(autouse=True)
def _restore_wgsy_logging():
    # setup_logging() (called by the CLI and by notebooks run in-process) gives the wgsy_lib logger its
    # own handler and turns propagation off; undo that so later tests that capture logs still see them.
    logger = logging.getLogger("wgsy_lib")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    logger.handlers[:] = handlers
    logger.propagate = propagate
    logger.setLevel(level)
