"""The instruction (user text) of each training and evaluation example.

The instruction names the allowed diagnoses from labels.yaml and the answer format. It may also give
features from a label-blind annotation of the photo; it never contains anything derived from the
photo's label, which is what made the earlier converter's test examples leak their answers.
"""

from __future__ import annotations

from typing import Mapping

from .answers import check_answer_format
from .features import UNJUDGED_VALUES, FeatureSchema
from .labels import LabelSet

_OPENING = "Look at the face in this photograph."


def build_instruction(answer_format: str, labels: LabelSet, *, features: Mapping[str, str] | None = None,
                      schema: FeatureSchema | None = None) -> str:
    """Return the instruction for one example; `features` (label-blind only) are listed when given."""
    check_answer_format(answer_format, labels)
    parts = [_OPENING]
    if features:
        parts.append("Features noted by a reviewer who did not know the diagnosis: "
                     f"{describe_features(features, schema=schema, abnormal_only=False)}.")
    if answer_format == "binary":
        parts.append(f"Does this person have {labels.binary_positive}? "
                     'Answer with JSON only: {"ws": "yes"} or {"ws": "no"}.')
        return " ".join(parts)

    allowed = "; ".join(labels.names)
    parts.append(f"Which diagnosis fits best? Choose exactly one of: {allowed}.")
    if answer_format == "diagnosis":
        parts.append("Answer with the diagnosis name only, written exactly as listed.")
    else:
        parts.append('Answer with one JSON object: {"diagnosis": the name as listed, "features": '
                     '{feature: value} for the facial features you see, "explanation": one short sentence}.')
    return " ".join(parts)


def feature_phrase(name: str, value: str) -> str:
    """Return a readable phrase for one feature value ("broad forehead", "periorbital fullness")."""
    feature = name.replace("_", " ")
    if value == "present":
        return feature
    if value == "absent":
        return f"no {feature}"
    return f"{value.replace('_', ' ')} {feature}"


def describe_features(features: Mapping[str, str], *, schema: FeatureSchema | None = None,
                      abnormal_only: bool = True) -> str:
    """Return the judged features as a comma-separated phrase list, in schema order when a schema is given.

    With `abnormal_only`, only values that carry an HPO term in the schema are listed (without a
    schema: every value other than typical, uncertain and not_visible).
    """
    names = [name for name in schema.names if name in features] if schema else sorted(features)
    phrases = []
    for name in names:
        value = str(features[name])
        if value in UNJUDGED_VALUES:
            continue
        if abnormal_only and not _is_abnormal(name, value, schema):
            continue
        phrases.append(feature_phrase(name, value))
    return ", ".join(phrases)


def explanation_from_features(features: Mapping[str, str] | None, *, schema: FeatureSchema | None = None) -> str | None:
    """Return a one-sentence explanation built from the abnormal features, or None without features."""
    if not features:
        return None
    observed = describe_features(features, schema=schema, abnormal_only=True)
    if not observed:
        return "No dysmorphic features observed."
    return f"Observed: {observed}."


def _is_abnormal(name: str, value: str, schema: FeatureSchema | None) -> bool:
    if schema is not None and name in schema.features:
        return value in schema[name].abnormal_values
    return value not in UNJUDGED_VALUES | {"typical"}
