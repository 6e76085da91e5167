"""The JSON schema an annotator must answer in, generated from params/features.yaml, and the
validation of every answer against it.

The schema follows OpenAI's strict structured-output rules (every object closed with
`additionalProperties: false`, every key listed in `required`, string enums for the values), so the
same dictionary serves as `response_format` for OpenAI and for servers that honour it (vLLM), and
as the reference for validating the answers of servers and local models that ignore it.

`parse_answer` turns any model text into a `ParsedAnswer` with one of the store's statuses:

- `refused`: the API's `refusal` field was set, or the text declines without giving JSON;
- `truncated`: generation stopped at the token limit (finish reason `length`);
- `invalid`: no JSON object with a `features` mapping was found;
- `ok`: features found; values outside the schema become `uncertain` and are listed in
  `out_of_schema`, so they are counted instead of silently dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .features import UNCERTAIN, FeatureSchema
from .parsing import find_json_objects

SCHEMA_NAME = "facial_features"
# Limits of OpenAI's strict structured outputs (platform.openai.com, "Structured Outputs",
# supported schemas): the older, tighter numbers, so a schema that passes works on every model.
MAX_OBJECT_PROPERTIES = 100
MAX_ENUM_VALUES = 500
MAX_NESTING_DEPTH = 5
# Everyday words models use for a value the schema spells differently.
VALUE_ALIASES = {"normal": "typical", "none": "typical", "absent": "typical", "no": "typical",
                 "unremarkable": "typical", "unknown": UNCERTAIN, "not_assessable": UNCERTAIN,
                 "cannot_assess": UNCERTAIN, "unclear": UNCERTAIN}
# Phrases of a model that declines to answer. Only consulted when no JSON answer was found, so a
# valid answer whose explanation says "cannot be assessed" is not taken for a refusal.
_REFUSAL_PATTERN = re.compile(
    r"\b(i\s*(?:can(?:'|’)?t|cannot|can not|won(?:'|’)?t|am unable to|'m unable to|am not able to|'m not able to)"
    r"\s+(?:help|assist|provide|analy[sz]e|identify|describe|comply|do that|make)"
    r"|i(?:'|’)m sorry,? but|as an ai\b)",
    re.IGNORECASE,
)


def build_json_schema(features: FeatureSchema) -> dict[str, Any]:
    """Return the JSON schema of an annotation: every feature's value plus a short explanation."""
    properties = {
        feature.name: {"type": "string", "enum": list(feature.values), "description": feature.description}
        for feature in features
    }
    return {
        "type": "object",
        "properties": {
            "features": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            },
            "explanation": {
                "type": "string",
                "description": "One or two sentences on what in the photo supports the abnormal values.",
            },
        },
        "required": ["features", "explanation"],
        "additionalProperties": False,
    }


def response_format(features: FeatureSchema) -> dict[str, Any]:
    """Return the `response_format` argument for a strict structured-output chat completion."""
    return {"type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": build_json_schema(features)}}


def strict_schema_problems(schema: dict[str, Any]) -> list[str]:
    """Return every way `schema` breaks OpenAI's strict-mode rules (empty when it complies)."""
    problems: list[str] = []
    enum_count = 0

    def visit(node: dict[str, Any], where: str, depth: int) -> None:
        nonlocal enum_count
        if depth > MAX_NESTING_DEPTH:
            problems.append(f"{where}: nested deeper than {MAX_NESTING_DEPTH} levels")
        if node.get("type") == "object":
            properties = node.get("properties", {})
            if node.get("additionalProperties") is not False:
                problems.append(f"{where}: object without additionalProperties: false")
            if sorted(node.get("required", [])) != sorted(properties):
                problems.append(f"{where}: required must list every property")
            if len(properties) > MAX_OBJECT_PROPERTIES:
                problems.append(f"{where}: more than {MAX_OBJECT_PROPERTIES} properties")
            for name, child in properties.items():
                visit(child, f"{where}.{name}", depth + 1)
        if "enum" in node:
            enum_count += len(node["enum"])
            if not all(isinstance(value, str) for value in node["enum"]):
                problems.append(f"{where}: enum values must be strings")
        if "default" in node:
            problems.append(f"{where}: 'default' is not supported in strict mode")

    visit(schema, "$", 1)
    if enum_count > MAX_ENUM_VALUES:
        problems.append(f"$: {enum_count} enum values in all, above {MAX_ENUM_VALUES}")
    return problems


@dataclass
class ParsedAnswer:
    """The outcome of validating one model answer."""

    status: str
    features: dict[str, str] | None = None
    explanation: str | None = None
    reason: str | None = None
    out_of_schema: list[str] = field(default_factory=list)


def parse_answer(text: str | None, features: FeatureSchema, *, refusal: str | None = None,
                 finish_reason: str | None = None) -> ParsedAnswer:
    """Validate a model's answer against the feature schema and return its status and features."""
    if refusal:
        return ParsedAnswer("refused", reason=f"the API returned a refusal: {refusal[:300]}")
    if finish_reason == "length":
        return ParsedAnswer("truncated", reason="generation stopped at the output token limit")
    text = text or ""

    candidates = find_json_objects(text)
    for position, candidate in enumerate(candidates):
        answer = validate_answer(candidate, features)
        if answer is None:
            continue
        if len(candidates) > 1:
            note = f"the text held {len(candidates)} JSON objects; used number {position + 1}"
            answer.reason = f"{answer.reason}; {note}" if answer.reason else note
        return answer

    if _REFUSAL_PATTERN.search(text):
        return ParsedAnswer("refused", reason="the text declines to answer and holds no JSON annotation")
    if not text.strip():
        return ParsedAnswer("invalid", reason="empty answer")
    if candidates:
        return ParsedAnswer("invalid", reason=f"{len(candidates)} JSON object(s) found, none with a 'features' mapping")
    if "{" in text:
        return ParsedAnswer("invalid", reason="the text starts a JSON object that does not parse")
    return ParsedAnswer("invalid", reason="no JSON object in the answer")


def validate_answer(candidate: Any, features: FeatureSchema) -> ParsedAnswer | None:
    """Check one decoded JSON object; return None when it is no annotation at all."""
    if not isinstance(candidate, dict):
        return None
    values = candidate.get("features")
    if not isinstance(values, dict):
        # Some models drop the wrapper and list the features at the top level.
        if any(name in candidate for name in features.names):
            values = {key: value for key, value in candidate.items() if key != "explanation"}
        else:
            return None

    checked: dict[str, str] = {}
    out_of_schema: list[str] = []
    for feature in features:
        if feature.name not in values:
            checked[feature.name] = UNCERTAIN
            out_of_schema.append(f"{feature.name}: missing")
            continue
        value = _normalize_value(values[feature.name])
        value = VALUE_ALIASES.get(value, value) if value not in feature.values else value
        if value in feature.values:
            checked[feature.name] = value
        else:
            checked[feature.name] = UNCERTAIN
            out_of_schema.append(f"{feature.name}: {str(values[feature.name])[:80]!r} is not an allowed value")
    for extra in sorted(set(values) - set(features.names)):
        out_of_schema.append(f"{extra}: not a feature of the schema (ignored)")

    explanation = candidate.get("explanation")
    if explanation is not None and not isinstance(explanation, str):
        explanation = json.dumps(explanation, ensure_ascii=False)
    if len([item for item in out_of_schema if item.endswith(": missing")]) == len(features.names):
        return None
    reason = f"{len(out_of_schema)} value(s) outside the schema" if out_of_schema else None
    return ParsedAnswer("ok", features=checked, explanation=explanation, reason=reason, out_of_schema=out_of_schema)


def _normalize_value(value: Any) -> str:
    return re.sub(r"[\s\-]+", "_", str(value).strip().lower())
