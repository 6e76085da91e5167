"""The answer formats a model is trained to write, shared by conversion (which renders answers)
and evaluation (which parses them and scores each allowed diagnosis).

- `json` (default): {"diagnosis": ..., "features": {...}, "explanation": ...}
- `diagnosis`: the canonical class name alone
- `binary`: the earlier WGSY scripts' {"ws": "yes" | "no"}, for two-class cohorts only

The diagnosis always comes first, so that the first tokens of an answer decide the class. Label
scoring relies on this: it compares the likelihood of each class's answer prefix (`answer_prefix`).
"""

from __future__ import annotations

import json
from typing import Mapping

from .errors import ConfigError
from .labels import LabelSet

ANSWER_FORMATS = ("json", "diagnosis", "binary")


def render_answer(answer_format: str, label: str, labels: LabelSet, *,
                  features: Mapping[str, str] | None = None, explanation: str | None = None) -> str:
    """Return the text the model should answer for an example of class `label`."""
    check_answer_format(answer_format, labels)
    if answer_format == "diagnosis":
        return label
    if answer_format == "binary":
        return json.dumps({"ws": _binary_value(label, labels)})
    answer: dict[str, object] = {"diagnosis": label}
    if features:
        answer["features"] = dict(features)
    if explanation:
        answer["explanation"] = explanation
    return json.dumps(answer, ensure_ascii=False)


def answer_prefix(answer_format: str, label: str, labels: LabelSet) -> str:
    """Return the start of the answer that identifies `label`, for likelihood scoring.

    The prefix ends with the closing quote of the class name, so "Down syndrome" cannot win by being
    a prefix of a longer class name.
    """
    check_answer_format(answer_format, labels)
    if answer_format == "diagnosis":
        return label
    if answer_format == "binary":
        return json.dumps({"ws": _binary_value(label, labels)})[:-1]
    return json.dumps({"diagnosis": label}, ensure_ascii=False)[:-1]


def scoring_classes(answer_format: str, labels: LabelSet) -> list[str]:
    """Return the classes a model answering in `answer_format` can name."""
    if answer_format == "binary":
        return [labels.binary_positive, labels.binary_negative]
    return labels.names


def check_answer_format(answer_format: str, labels: LabelSet) -> None:
    if answer_format not in ANSWER_FORMATS:
        raise ConfigError(f"answer_format {answer_format!r} is invalid; expected one of {', '.join(ANSWER_FORMATS)}")


def _binary_value(label: str, labels: LabelSet) -> str:
    if label == labels.binary_positive:
        return "yes"
    if label == labels.binary_negative:
        return "no"
    raise ConfigError(
        f"answer_format 'binary' can only express {labels.binary_positive!r} (yes) and {labels.binary_negative!r} (no), "
        f"not {label!r}; use answer_format 'json' or 'diagnosis' for more classes, or drop the other classes"
    )
