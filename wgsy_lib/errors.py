"""The project's exception family.

Every error WGSY raises for a bad input is a `WgsyError`, so callers (the CLI, the grid runner)
can tell a user's mistake, which gets a one-paragraph message, from a bug, which gets a traceback.
"""


class WgsyError(Exception):
    """Base class of every error WGSY raises on purpose."""


class ConfigError(WgsyError, ValueError):
    """A parameter or parameter file is invalid."""


class DataError(WgsyError, ValueError):
    """A data file (manifest, annotation store, training JSONL) or one of its rows is invalid."""


class ImageError(DataError):
    """An image file cannot be decoded or is unsafe to decode."""


class ModelError(WgsyError, RuntimeError):
    """A model, processor or adapter is missing, incompatible or cannot run on this hardware."""


class AnnotationError(WgsyError, RuntimeError):
    """The annotation backend failed in a way that retrying will not fix (billing, authentication)."""
