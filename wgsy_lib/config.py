"""Validated parameters: one config class per notebook, built from papermill's values or a YAML file.

papermill only warns about unknown parameter names, `-p` passes lists as strings, and YAML reads
`2e-4` as a string. Every stage therefore rebuilds its parameters into a `StageConfig` subclass
right after the parameters cell, and any misspelt name, wrong type or out-of-range value stops the
run there with a message naming the parameter, the value received and what is allowed.
"""

from __future__ import annotations

import difflib
import re
import types
from pathlib import Path
from typing import Any, ClassVar, Mapping, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .errors import ConfigError
from .paths import resolve_path

# Names that IPython and papermill put into a kernel's globals; they are never parameters.
_KERNEL_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})
_LITERAL_TYPES = (str, int, float, bool, type(None), list, dict, tuple)
# Whole name parts only: "hf_token" and "openai_api_key" are secrets, "max_new_tokens" is not.
_SECRET_NAME = re.compile(r"(?:^|_)(api_?key|token|secret|password)(?:$|_)", re.IGNORECASE)


class StageConfig(BaseModel):
    """Base of every stage's parameters; unknown names are rejected instead of ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)

    # The notebook these parameters belong to, used in messages ("03_train").
    stage: ClassVar[str] = "wgsy"

    @field_validator("*", mode="before")
    @classmethod
    def _parse_string_lists(cls, value: Any, info: Any) -> Any:
        # `papermill -p target_modules "[q_proj, v_proj]"` arrives as a string: read it as YAML.
        field = cls.model_fields.get(info.field_name)
        if field is None or not isinstance(value, str) or not _expects_list_or_dict(field.annotation):
            return value
        text = value.strip()
        if text.startswith(("[", "{")):
            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise ValueError(f"could not read {value!r} as a YAML list or mapping ({error})") from error
        if "," in text:
            return [item.strip() for item in text.split(",") if item.strip()]
        return [text] if text else []

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "parameters") -> "StageConfig":
        """Validate `values` (parameter name to value) and return the config, or raise ConfigError."""
        _reject_secret_names(values, cls.stage)
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise ConfigError(_unknown_message(cls, unknown, source))
        try:
            return cls(**dict(values))
        except ValidationError as error:
            raise ConfigError(_validation_message(cls, error, source)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StageConfig":
        """Read parameters from a YAML file (the same files `papermill -f` takes) and validate them."""
        resolved, values = read_yaml_mapping(path, "parameter file", expected="a mapping of parameter names to values")
        return cls.from_mapping(values, source=str(resolved))

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> "StageConfig":
        """Validate the parameters a notebook holds in its globals after papermill injected its values.

        Every plain value in `namespace` counts as a parameter, so a name papermill injected that the
        stage does not know (a typo in `-p` or a YAML file) is an error rather than silently ignored.
        Modules, functions, classes and IPython's own names are skipped.
        """
        values = {
            name: value
            for name, value in namespace.items()
            if not name.startswith("_") and name not in _KERNEL_NAMES and isinstance(value, _LITERAL_TYPES)
            and not isinstance(value, (types.ModuleType, type))
        }
        return cls.from_mapping(values, source=f"the parameters of {cls.stage}")

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as plain values, for run cards and resolved parameter files."""
        return self.model_dump(mode="json")

    def path(self, name: str) -> Path | None:
        """Return the path parameter `name` resolved from the repository root, or None if unset."""
        value = getattr(self, name)
        if value in (None, ""):
            return None
        return resolve_path(value)


def read_yaml_mapping(path: str | Path, what: str, *, expected: str) -> tuple[Path, dict[str, Any]]:
    """Read a YAML file that must contain a mapping; return its resolved path and the mapping.

    `what` names the file in messages ("parameter file", "grid file"), and `expected` says what the
    mapping should contain.
    """
    resolved = resolve_path(path)
    if not resolved.is_file():
        raise ConfigError(f"{what} {resolved} not found; check the path (relative paths start at the repository root)")
    try:
        values = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {resolved} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{what} {resolved} must contain {expected}, not {type(values).__name__}")
    return resolved, values


def _expects_list_or_dict(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (list, tuple, dict, set):
        return True
    return any(_expects_list_or_dict(arg) for arg in get_args(annotation))


def _reject_secret_names(values: Mapping[str, Any], stage: str) -> None:
    for name in values:
        if _SECRET_NAME.search(name):
            raise ConfigError(
                f"{stage}: parameter {name!r} looks like a secret. Secrets are never parameters, because "
                "papermill writes every parameter into the executed notebook; set the matching environment "
                "variable instead (for example OPENAI_API_KEY) and remove this parameter."
            )


def _unknown_message(cls: type[StageConfig], unknown: list[str], source: str) -> str:
    lines = [f"{cls.stage}: unknown parameter(s) in {source}:"]
    for name in unknown:
        close = difflib.get_close_matches(name, list(cls.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        lines.append(f"  - {name!r}{hint}")
    lines.append(f"The parameters of {cls.stage} are: {', '.join(cls.model_fields)}.")
    return "\n".join(lines)


def _validation_message(cls: type[StageConfig], error: ValidationError, source: str) -> str:
    lines = [f"{cls.stage}: invalid parameter(s) in {source}:"]
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"]) or "(all)"
        field = cls.model_fields.get(str(problem["loc"][0])) if problem["loc"] else None
        help_text = f" [{field.description}]" if field is not None and field.description else ""
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"  - {name} = {problem.get('input')!r}: {message}{help_text}")
    lines.append("Fix the value in the parameters cell, the YAML file, or with `papermill -p NAME VALUE`.")
    return "\n".join(lines)
