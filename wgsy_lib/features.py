"""The dysmorphology feature schema of params/features.yaml.

Each feature has a description and allowed values; `typical` is unremarkable, `uncertain` means the
photo does not allow a judgement, and every other value maps to an HPO term.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import ConfigError
from .paths import params_dir, resolve_path

TYPICAL = "typical"
UNCERTAIN = "uncertain"
# Values that record that a feature could not be judged; they carry no HPO term and are neither
# observed nor excluded.
UNJUDGED_VALUES = frozenset({UNCERTAIN, "not_visible"})
_HPO_ID = re.compile(r"HP:\d{7}")


@dataclass(frozen=True)
class Feature:
    """One feature: its name, what it describes, and each allowed value's HPO id (None if normal)."""

    name: str
    description: str
    values: dict[str, str | None]

    @property
    def abnormal_values(self) -> dict[str, str]:
        return {value: hpo for value, hpo in self.values.items() if hpo is not None}


@dataclass(frozen=True)
class FeatureSchema:
    """All features of one features.yaml, in file order."""

    version: int
    features: dict[str, Feature]
    source: str

    @property
    def names(self) -> list[str]:
        return list(self.features)

    def __getitem__(self, name: str) -> Feature:
        return self.features[name]

    def __iter__(self):
        return iter(self.features.values())


def load_features(path: str | Path | None = None) -> FeatureSchema:
    """Read and check features.yaml (params/features.yaml by default)."""
    resolved = resolve_path(path) if path is not None else params_dir() / "features.yaml"
    if not resolved.is_file():
        raise ConfigError(f"feature schema {resolved} not found; pass the path of a features.yaml (see params/features.yaml)")
    try:
        data = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"feature schema {resolved} is not valid YAML: {error}") from None

    entries = data.get("features")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"feature schema {resolved}: 'features' must map feature names to their definitions")
    version = data.get("version")
    if not isinstance(version, int):
        raise ConfigError(f"feature schema {resolved}: 'version' must be an integer, got {version!r}")
    features = {name: _parse_feature(name, entry, resolved) for name, entry in entries.items()}
    return FeatureSchema(version=version, features=features, source=str(resolved))


def _parse_feature(name: str, entry: object, path: Path) -> Feature:
    where = f"feature schema {path}, feature {name!r}"
    if not re.fullmatch(r"[a-z][a-z0-9_]*", str(name)):
        raise ConfigError(f"{where}: names must be lower_snake_case (they become JSON keys)")
    if not isinstance(entry, dict) or not isinstance(entry.get("values"), dict):
        raise ConfigError(f"{where}: needs a 'description' and a 'values' mapping of value name to HPO id or null")
    values = {str(value): (None if hpo is None else str(hpo)) for value, hpo in entry["values"].items()}
    if UNCERTAIN not in values:
        raise ConfigError(f"{where}: every feature must allow {UNCERTAIN!r}; add `{UNCERTAIN}: null` to its values")
    if TYPICAL not in values:
        raise ConfigError(f"{where}: every feature must allow {TYPICAL!r}; add `{TYPICAL}: null` to its values")
    for value, hpo in values.items():
        if hpo is not None and not _HPO_ID.fullmatch(hpo):
            raise ConfigError(f"{where}, value {value!r}: {hpo!r} is not an HPO id of the form HP:0000000")
        if value in UNJUDGED_VALUES | {TYPICAL} and hpo is not None:
            raise ConfigError(f"{where}, value {value!r}: this value means no abnormality and must map to null, not {hpo}")
    return Feature(name=str(name), description=str(entry.get("description", "")).strip(), values=values)
