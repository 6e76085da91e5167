"""Phenotype profiles of the phantom cohort (params/phantom.yaml) and how subjects are drawn from them.

A profile says, for one class, which abnormal feature values its subjects show and how often
(penetrance). An expressivity preset scales how often and how strongly they show. Sampling returns,
for every feature of params/features.yaml, the true value and the strength it is drawn with.

Synthetic: these profiles caricature a syndrome's gestalt for testing; they describe no patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from .errors import ConfigError
from .features import TYPICAL, FeatureSchema
from .paths import params_dir, resolve_path

# Abnormal values the drawing code can show. A profile may use only these; anything else in
# features.yaml is drawn as typical by the phantom.
DRAWABLE: dict[str, tuple[str, ...]] = {
    "forehead": ("broad", "prominent", "narrow"),
    "hairline": ("low", "high"),
    "eyebrows": ("medial_flaring", "sparse", "thick", "synophrys"),
    "periorbital_fullness": ("present",),
    "epicanthal_folds": ("present",),
    "eye_spacing": ("wide", "close"),
    "palpebral_fissure_slant": ("upslanted", "downslanted"),
    "ptosis": ("present",),
    "iris_pattern": ("stellate", "brushfield_spots", "heterochromia"),
    "nasal_bridge": ("flat", "wide"),
    "nasal_tip": ("upturned", "bulbous", "broad"),
    "philtrum_length": ("long", "short"),
    "lip_fullness": ("full", "thin"),
    "mouth_width": ("wide", "narrow"),
    "mouth_shape": ("open_with_protruding_tongue", "asymmetric"),
    "chin_size": ("small", "prominent"),
    "dental_anomalies": ("widely_spaced", "small_teeth"),
    "facial_asymmetry": ("present",),
    "ear_position": ("low_set", "posteriorly_rotated"),
    "ear_shape": ("small", "malformed", "preauricular_tag"),
}

# Features the drawing can confine to one side of the face (`one_sided` in a profile).
ONE_SIDED_DRAWABLE = ("ear_shape", "ear_position", "mouth_width")


@dataclass(frozen=True)
class Expressivity:
    """How strongly class features show: penetrance scaling, strength range, gain and nuisance."""

    name: str
    penetrance_floor: float  # a profile's penetrance p becomes max(p, floor) when p > 0
    penetrance_scale: float
    strength: tuple[float, float]  # per subject and feature, uniform in this range
    gain: float  # multiplies every drawn deviation from typical
    background: bool  # whether features outside the profile may show (params/phantom.yaml background_rate)
    hidden_ears: float  # chance that long hair hides the ears of a subject with long hair


# `exaggerated` is the preset a tiny model can learn (benchmarks/phantom_learnability.py); `realistic`
# is the demo's; `subtle` is for checking that metrics degrade gracefully.
PRESETS = {
    "subtle": Expressivity("subtle", 0.0, 0.8, (0.15, 0.6), 0.8, True, 0.5),
    "realistic": Expressivity("realistic", 0.0, 1.0, (0.35, 1.0), 1.0, True, 0.35),
    "exaggerated": Expressivity("exaggerated", 0.9, 1.0, (0.85, 1.0), 1.6, False, 0.0),
}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    features: dict[str, dict[str, float]]
    one_sided: tuple[str, ...] = ()  # features drawn on one side of the face only


@dataclass(frozen=True)
class ProfileSet:
    version: int
    background_rate: float
    profiles: dict[str, Profile]
    source: str


def expressivity_preset(value: str | float) -> Expressivity:
    """Return a named preset, or `realistic` penetrance with the gain `value` for a number."""
    if isinstance(value, str) and value in PRESETS:
        return PRESETS[value]
    try:
        gain = float(value)
    except (TypeError, ValueError):
        gain = -1.0
    if not 0.0 < gain <= 3.0:
        raise ConfigError(f"expressivity {value!r} is invalid; expected one of {', '.join(PRESETS)} "
                          "or a gain between 0 and 3 (1 = realistic)")
    base = PRESETS["realistic"]
    return Expressivity(f"gain {gain:g}", base.penetrance_floor, base.penetrance_scale, base.strength, gain,
                        base.background, base.hidden_ears)


def load_profiles(path: str | Path | None = None, *, features: FeatureSchema) -> ProfileSet:
    """Read and check phantom.yaml against the feature schema and the drawable values."""
    resolved = resolve_path(path) if path is not None else params_dir() / "phantom.yaml"
    if not resolved.is_file():
        raise ConfigError(f"phantom profiles {resolved} not found; pass the path of a phantom.yaml (see params/phantom.yaml)")
    try:
        data = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"phantom profiles {resolved} are not valid YAML: {error}") from None
    entries = data.get("profiles")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"phantom profiles {resolved}: 'profiles' must map phenotype names to profiles")
    rate = data.get("background_rate", 0.0)
    if not isinstance(rate, (int, float)) or not 0 <= rate <= 0.5:
        raise ConfigError(f"phantom profiles {resolved}: background_rate {rate!r} must be a number between 0 and 0.5")
    profiles = {str(name): _parse_profile(str(name), entry, resolved, features) for name, entry in entries.items()}
    return ProfileSet(version=int(data.get("version", 1)), background_rate=float(rate), profiles=profiles,
                      source=str(resolved))


def _parse_profile(name: str, entry: object, path: Path, schema: FeatureSchema) -> Profile:
    where = f"phantom profiles {path}, profile {name!r}"
    if not isinstance(entry, dict) or not isinstance(entry.get("features", {}), dict):
        raise ConfigError(f"{where}: needs a 'features' mapping of feature name to {{value: penetrance}}")
    parsed: dict[str, dict[str, float]] = {}
    for feature, values in (entry.get("features") or {}).items():
        if feature not in schema.features:
            raise ConfigError(f"{where}: feature {feature!r} is not in {schema.source}; known features: {', '.join(schema.names)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}, feature {feature!r}: expected {{value: penetrance}}, got {values!r}")
        for value, chance in values.items():
            if value not in DRAWABLE.get(feature, ()):
                raise ConfigError(f"{where}, feature {feature!r}: the phantom cannot draw {value!r}; "
                                  f"drawable values are {', '.join(DRAWABLE.get(feature, ())) or 'none'}")
            if not isinstance(chance, (int, float)) or not 0 <= chance <= 1:
                raise ConfigError(f"{where}, feature {feature!r}, value {value!r}: penetrance {chance!r} must be between 0 and 1")
        if sum(values.values()) > 1 + 1e-9:
            raise ConfigError(f"{where}, feature {feature!r}: penetrances {values} sum to more than 1; "
                              "values of one feature are exclusive")
        parsed[str(feature)] = {str(value): float(chance) for value, chance in values.items()}
    one_sided = entry.get("one_sided") or []
    if not isinstance(one_sided, list) or any(name not in ONE_SIDED_DRAWABLE for name in one_sided):
        raise ConfigError(f"{where}: one_sided {one_sided!r} must be a list drawn from {', '.join(ONE_SIDED_DRAWABLE)}")
    return Profile(name=name, description=str(entry.get("description", "")).strip(), features=parsed,
                   one_sided=tuple(one_sided))


def sample_features(profile: Profile, profiles: ProfileSet, schema: FeatureSchema, expressivity: Expressivity,
                    rng: np.random.Generator) -> dict[str, tuple[str, float]]:
    """Return {feature: (true value, strength in 0..1)} for one subject of `profile`."""
    sampled: dict[str, tuple[str, float]] = {}
    for feature in schema.names:
        chances = profile.features.get(feature)
        if chances and sum(chances.values()) > 0:
            scaled = _scaled_penetrance(chances, expressivity)
        elif expressivity.background and profiles.background_rate and DRAWABLE.get(feature):
            options = DRAWABLE[feature]
            scaled = {value: profiles.background_rate / len(options) for value in options}
        else:
            scaled = {}
        # Always draw the same number of random values per feature, so one profile edit does not
        # shift the random stream of every later feature.
        pick, strength_draw = rng.random(), rng.random()
        value = _choose(scaled, pick)
        low, high = expressivity.strength
        strength = low + (high - low) * strength_draw
        sampled[feature] = (value, strength if value != TYPICAL else 0.0)
    return sampled


def _scaled_penetrance(chances: dict[str, float], expressivity: Expressivity) -> dict[str, float]:
    # Scale the chance that the feature shows at all, keeping the split between its values.
    total = sum(chances.values())
    scaled_total = min(1.0, max(total * expressivity.penetrance_scale, expressivity.penetrance_floor))
    return {value: chance * scaled_total / total for value, chance in chances.items()}


def _choose(chances: dict[str, float], pick: float) -> str:
    edge = 0.0
    for value, chance in chances.items():
        edge += chance
        if pick < edge:
            return value
    return TYPICAL
