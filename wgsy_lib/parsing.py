"""Turning a model's generated text into one diagnosis from labels.yaml, or an honest failure.

`parse_answer` handles what models actually write:

- a thinking section before the answer: MedGemma 1.5 writes `<unused94>thought ... <unused95>`
  and then the answer; other reasoning models write `<think> ... </think>`. The section is removed
  and kept in the result. A section that never closes means the answer was never written;
- JSON in markdown fences, among prose, followed by a comment, or two JSON blocks (the first
  block that names a diagnosis wins);
- JSON cut off by the token limit, from which a complete `"diagnosis": "..."` field is recovered;
- the field names of the earlier WGSY scripts: `diagnosis`, `label`, `disease`, `prediction`,
  and the two-class `{"ws": "yes" | "no"}` (through `LabelSet.from_binary`);
- a bare class name or a sentence naming one class (the `diagnosis` answer format).

The diagnosis is then normalised with `LabelSet.normalize` (whole words, negation, ambiguity).
Every answer gets a status: `parsed` (a known class), `unknown_label` (an answer was found but
names no single class) or `unparseable` (no answer found). The last two predict Unknown, which
metrics count as wrong; nothing is dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from .labels import UNKNOWN, LabelSet

PARSED = "parsed"
UNKNOWN_LABEL = "unknown_label"
UNPARSEABLE = "unparseable"
STATUSES = (PARSED, UNKNOWN_LABEL, UNPARSEABLE)

# Field names that carry the diagnosis, in order of preference. `diagnosis` is what WGSY trains;
# the others are what the earlier scripts and zero-shot models write.
DIAGNOSIS_FIELDS = ("diagnosis", "label", "disease", "prediction", "syndrome", "answer")
BINARY_FIELDS = ("ws", "williams", "is_williams")

# (opening, closing) markers of thinking sections. MedGemma 1.5 uses its reserved tokens
# <unused94> and <unused95>; the word "thought" follows the opening marker.
THINKING_MARKERS = (("<unused94>", "<unused95>"), ("<think>", "</think>"), ("<thinking>", "</thinking>"))
# Gemma turn and padding tokens that can survive decoding with skip_special_tokens=False.
_TURN_TOKENS = re.compile(r"<end_of_turn>.*|<eos>.*|<pad>|<start_of_turn>(model|user)?\n?|<bos>", re.DOTALL)
_FIELD_PATTERN = re.compile(
    r"""["'](?P<key>[A-Za-z_]+)["']\s*:\s*["'](?P<value>[^"'\n{}]*)["']""",
)
_BARE_BINARY_PATTERN = re.compile(r"""["'](?P<key>[A-Za-z_]+)["']\s*:\s*(?P<value>true|false|1|0)\b""", re.IGNORECASE)
# Free text longer than this is prose rather than an answer; it is still searched for a class name,
# but a sentence this long that names exactly one class is rare enough to be worth a reason field.
_MAX_PLAIN_ANSWER_CHARS = 200


@dataclass(frozen=True)
class ParsedAnswer:
    """The diagnosis read from one generated text, with its status and reason."""

    status: str
    label: str
    raw: str
    answer: Any = None
    method: str | None = None
    reason: str | None = None
    thinking: str | None = None
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def strip_thinking(text: str) -> tuple[str, str | None, bool]:
    """Split `text` into (answer, thinking section, whether the section was closed).

    Returns the text unchanged, None and True when it has no thinking section. When only a closing
    marker is present (the opening token was dropped during decoding), everything before it is
    the thinking section.
    """
    for opening, closing in THINKING_MARKERS:
        start = text.find(opening)
        end = text.rfind(closing)
        if end >= 0 and (start < 0 or start < end):
            thinking_start = start + len(opening) if start >= 0 else 0
            return text[end + len(closing):], text[thinking_start:end].strip(), True
        if start >= 0:
            return text[:start], text[start + len(opening):].strip(), False
    return text, None, True


def parse_answer(text: str | None, labels: LabelSet, *, truncated: bool = False) -> ParsedAnswer:
    """Read the diagnosis from a model's generated text; see the module docstring for the cases.

    `truncated` says the generation stopped at max_new_tokens rather than at the end-of-turn token;
    it is recorded and used in the reason when no answer can be found.
    """
    raw = "" if text is None else str(text)
    cleaned = _TURN_TOKENS.sub("", raw)
    answer_text, thinking, closed = strip_thinking(cleaned)
    if not closed:
        reason = "the thinking section never closed, so no answer was written"
        if truncated:
            reason += " (generation stopped at max_new_tokens; raise it)"
        return ParsedAnswer(UNPARSEABLE, UNKNOWN, raw, reason=reason, thinking=thinking, truncated=truncated)

    answer_text = answer_text.strip()
    if not answer_text:
        reason = "empty answer" + (" (generation stopped at max_new_tokens)" if truncated else "")
        return ParsedAnswer(UNPARSEABLE, UNKNOWN, raw, reason=reason, thinking=thinking, truncated=truncated)

    for finder in (_from_json_objects, _from_partial_json, _from_plain_text):
        found = finder(answer_text, labels)
        if found is not None:
            value, result, method, answer = found
            status = PARSED if result.known else UNKNOWN_LABEL
            reason = None if result.known else f"{value!r}: {result.reason}"
            return ParsedAnswer(status, result.label, raw, answer=answer, method=method, reason=reason,
                                thinking=thinking, truncated=truncated)

    reason = "no JSON object with a diagnosis field and no class name in the text"
    if truncated:
        reason += " (generation stopped at max_new_tokens)"
    return ParsedAnswer(UNPARSEABLE, UNKNOWN, raw, answer=answer_text, reason=reason, thinking=thinking,
                        truncated=truncated)


def find_json_objects(text: str) -> list[dict[str, Any]]:
    """Return every top-level JSON object in `text`, in order, ignoring fences and prose around them.

    Decoding starts at each `{` with Python's JSON decoder, so braces and backticks inside string
    values do not confuse it, and an object found is skipped as a whole. The annotator's answer
    checks use it too.
    """
    decoder = json.JSONDecoder()
    objects: list[dict[str, Any]] = []
    position = text.find("{")
    while position >= 0:
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            position = text.find("{", position + 1)
            continue
        if isinstance(value, dict):
            objects.append(value)
        position = text.find("{", end)
    return objects


def _from_json_objects(text: str, labels: LabelSet):
    for obj in find_json_objects(text):
        found = _diagnosis_from_mapping(obj, labels)
        if found is not None:
            value, result = found
            return value, result, "json", obj
    return None


def _diagnosis_from_mapping(obj: dict[str, Any], labels: LabelSet, *, depth: int = 0):
    keys = {str(key).strip().lower(): key for key in obj}
    for field in DIAGNOSIS_FIELDS:
        if field in keys:
            value = obj[keys[field]]
            if isinstance(value, dict) and depth == 0:
                nested = _diagnosis_from_mapping(value, labels, depth=1)
                if nested is not None:
                    return nested
                continue
            return value, labels.normalize(_as_text(value))
    for field in BINARY_FIELDS:
        if field in keys:
            value = obj[keys[field]]
            return value, labels.from_binary(value)
    if depth == 0:
        # One level of nesting, as in {"result": {"diagnosis": ...}}.
        for value in obj.values():
            if isinstance(value, dict):
                nested = _diagnosis_from_mapping(value, labels, depth=1)
                if nested is not None:
                    return nested
    return None


def _from_partial_json(text: str, labels: LabelSet):
    """Recover a complete "diagnosis": "..." pair from JSON that was cut off or is not strict JSON."""
    pairs = {}
    for found in _FIELD_PATTERN.finditer(text):
        pairs.setdefault(found["key"].lower(), found["value"])
    for found in _BARE_BINARY_PATTERN.finditer(text):
        pairs.setdefault(found["key"].lower(), found["value"])
    for field in DIAGNOSIS_FIELDS:
        if field in pairs:
            return pairs[field], labels.normalize(pairs[field]), "json_partial", {field: pairs[field]}
    for field in BINARY_FIELDS:
        if field in pairs:
            return pairs[field], labels.from_binary(pairs[field]), "json_partial", {field: pairs[field]}
    return None


def _from_plain_text(text: str, labels: LabelSet):
    if "{" in text:
        # A JSON answer without any diagnosis field: reading class names out of its feature values
        # ("normal" ears) would be a guess.
        return None
    stripped = text.strip().strip("`").strip()
    result = labels.normalize(stripped)
    if not result.known and result.reason == "matches no class or synonym":
        return None
    method = "text" if len(stripped) <= _MAX_PLAIN_ANSWER_CHARS else "prose"
    return stripped, result, method, stripped


def _as_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " and ".join(str(item) for item in value)
    return "" if value is None else str(value)
