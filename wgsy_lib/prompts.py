"""Versioned prompt templates for facial annotation.

A template is never edited in place: a change of wording gets a new template name, so annotations
made with the old wording stay identifiable. The prompt version recorded with every annotation is
the template name plus the version of params/features.yaml (`face-v1+features-v1`), because the
feature list is part of what the model is asked; a rerun with either changed annotates again.

Two modes:
- `blind` (default): the model sees the photo and the feature list, nothing about the diagnosis.
- `label_conditioned`: the prompt also names the diagnosis, as the earlier WGSY scripts did. Its
  descriptions are for augmenting training answers only; they leak the label and must never be
  fed to a validation or test input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import ConfigError
from .features import FeatureSchema

DEFAULT_TEMPLATE = "face-v1"

_SYSTEM_V1 = (
    "You are a clinical dysmorphologist. You describe the facial features visible in one photograph "
    "for a research dataset, using a fixed list of features and allowed values. You do not identify "
    "the person. When the photo does not show a feature clearly enough, answer 'uncertain' for it "
    "rather than guessing."
)
_USER_V1 = (
    "Describe the face in this photograph. For every feature below, choose exactly one of the allowed "
    "values.\n\n{feature_list}\n\n{label_sentence}"
    "Answer with one JSON object and nothing else, in this shape:\n{example}\n"
    "The explanation is one or two sentences on what in the photo supports the abnormal values."
)
_LABEL_SENTENCE_V1 = (
    "The person has a confirmed diagnosis of {label}. Describe the features as they appear in this "
    "photo; do not list features of the syndrome that the photo does not show.\n\n"
)

TEMPLATES: dict[str, dict[str, str]] = {
    "face-v1": {"system": _SYSTEM_V1, "user": _USER_V1, "label_sentence": _LABEL_SENTENCE_V1},
}
MODES = ("blind", "label_conditioned")


@dataclass(frozen=True)
class Prompt:
    """The text sent with one photo."""

    system: str
    user: str
    version: str
    mode: str


def prompt_version(template: str, features: FeatureSchema) -> str:
    """Return the version string recorded with each annotation made with `template`."""
    check_template(template)
    return f"{template}+features-v{features.version}"


def check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ConfigError(f"prompt_template {template!r} is unknown; the templates are: {', '.join(TEMPLATES)}")


def build_prompt(features: FeatureSchema, *, template: str = DEFAULT_TEMPLATE, mode: str = "blind",
                 label: str | None = None) -> Prompt:
    """Return the system and user text for one photo; `label` is required in label_conditioned mode."""
    check_template(template)
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is invalid; expected one of {', '.join(MODES)}")
    parts = TEMPLATES[template]
    if mode == "label_conditioned":
        if not label:
            raise ConfigError("mode 'label_conditioned' needs the photo's diagnosis, but its label is empty; "
                              "fill the manifest's label column or use mode 'blind'")
        label_sentence = parts["label_sentence"].format(label=label)
    else:
        label_sentence = ""
    user = parts["user"].format(feature_list=_feature_list(features), label_sentence=label_sentence,
                                example=_example_answer(features))
    return Prompt(system=parts["system"], user=user, version=prompt_version(template, features), mode=mode)


def _feature_list(features: FeatureSchema) -> str:
    lines = []
    for feature in features:
        lines.append(f"- {feature.name}: {feature.description} Allowed values: {', '.join(feature.values)}.")
    return "\n".join(lines)


def _example_answer(features: FeatureSchema) -> str:
    example = {"features": {feature.name: "..." for feature in features}, "explanation": "..."}
    return json.dumps(example)
