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


def scoring_token_ids(tokenizer, answer_format: str, label: str, labels: LabelSet) -> list[int]:
    """Return the token ids label scoring compares for `label`: the answer prefix as tokenized in training.

    A tokenizer may merge the prefix's closing quote with the character after it (`"}` or `",`), so
    the prefix tokenized on its own can differ from the tokens the model was trained on. The ids
    are therefore cut from tokenized full answers: the whole tokens inside the prefix, common to
    an answer that ends after the diagnosis and one that goes on with features.
    """
    prefix = answer_prefix(answer_format, label, labels)
    continuations = [render_answer(answer_format, label, labels)]
    if answer_format == "json":
        continuations.append(render_answer(answer_format, label, labels, features={"feature": "value"}))
    token_lists = []
    for answer in continuations:
        encoded = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        token_lists.append([token for token, (_, end) in zip(encoded["input_ids"], encoded["offset_mapping"])
                            if end <= len(prefix)])
    common = token_lists[0]
    for tokens in token_lists[1:]:
        length = next((index for index, (a, b) in enumerate(zip(common, tokens)) if a != b), min(len(common), len(tokens)))
        common = common[:length]
    if not common:
        raise ConfigError(f"the answer prefix {prefix!r} of {label!r} covers no whole token; label scoring cannot compare it")
    return common


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
