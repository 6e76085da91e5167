"""Reading diagnoses out of generated text: the shapes models really write, and honest failures."""

from __future__ import annotations

import pytest

from wgsy_lib.labels import UNKNOWN
from wgsy_lib.parsing import PARSED, UNKNOWN_LABEL, UNPARSEABLE, find_json_objects, parse_answer, strip_thinking


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"diagnosis": "Williams syndrome"}', "Williams syndrome"),
        ('```json\n{"diagnosis": "Down syndrome", "features": {"ears": "normal"}}\n```', "Down syndrome"),
        ('Here is my answer:\n{"diagnosis": "Goldenhar syndrome"}\nI hope this helps.', "Goldenhar syndrome"),
        ('{"diagnosis": "healthy control", "explanation": "uses `code` ticks"} // final', "healthy control"),
        ('{"features": {}}\n{"diagnosis": "Down syndrome"}', "Down syndrome"),
        ('{"diagnosis": "Down syndrome"} {"diagnosis": "Williams syndrome"}', "Down syndrome"),
        ('{"label": "WS"}', "Williams syndrome"),
        ('{"disease": "trisomy 21"}', "Down syndrome"),
        ('{"prediction": "唐氏综合征"}', "Down syndrome"),
        ('{"Diagnosis": "Williams-Beuren syndrome"}', "Williams syndrome"),
        ('{"result": {"diagnosis": "Goldenhar syndrome"}}', "Goldenhar syndrome"),
        ('{"ws": "yes"}', "Williams syndrome"),
        ('{"ws": "no"}', "healthy control"),
        ('{"ws": true}', "Williams syndrome"),
        ("Down syndrome", "Down syndrome"),
        ("`healthy control`", "healthy control"),
        ("The facial features are most consistent with Williams syndrome.", "Williams syndrome"),
    ],
)
def test_parse_answer_shapes(labels, text, expected):
    parsed = parse_answer(text, labels)
    assert parsed.status == PARSED, parsed.reason
    assert parsed.label == expected


def test_truncated_json_recovers_diagnosis(labels):
    parsed = parse_answer('{"diagnosis": "Down syndrome", "features": {"eyes": "upsl', labels, truncated=True)
    assert parsed.label == "Down syndrome"
    assert parsed.method == "json_partial"
    assert parsed.truncated


def test_truncated_json_without_complete_value_is_unparseable(labels):
    parsed = parse_answer('{"diagnosis": "Down synd', labels, truncated=True)
    assert parsed.status == UNPARSEABLE
    assert parsed.label == UNKNOWN
    assert "max_new_tokens" in parsed.reason


def test_medgemma_thinking_section_is_stripped(labels):
    text = '<unused94>thought\nThe eyes slant upward; maybe {"diagnosis": "Williams syndrome"}?<unused95>{"diagnosis": "Down syndrome"}'
    parsed = parse_answer(text, labels)
    assert parsed.label == "Down syndrome"
    assert parsed.thinking.startswith("thought")


def test_generic_think_tags_are_stripped(labels):
    parsed = parse_answer("<think>Could be healthy.</think>\nGoldenhar syndrome", labels)
    assert parsed.label == "Goldenhar syndrome"
    assert parsed.thinking == "Could be healthy."


def test_unclosed_thinking_section_is_unparseable(labels):
    parsed = parse_answer('<unused94>thought\nLet me think about Down syndrome', labels, truncated=True)
    assert parsed.status == UNPARSEABLE
    assert "never closed" in parsed.reason


def test_closing_marker_alone_ends_thinking(labels):
    answer, thinking, closed = strip_thinking("thought\nreasoning<unused95>Down syndrome")
    assert answer == "Down syndrome"
    assert thinking == "thought\nreasoning"
    assert closed


def test_end_of_turn_and_padding_removed(labels):
    parsed = parse_answer('{"diagnosis": "Williams syndrome"}<end_of_turn>\n<pad><pad>', labels)
    assert parsed.label == "Williams syndrome"


def test_abnormal_is_not_normal(labels):
    parsed = parse_answer('{"diagnosis": "abnormal"}', labels)
    assert parsed.status == UNKNOWN_LABEL
    assert parsed.label == UNKNOWN


def test_label_outside_list_is_unknown_label(labels):
    parsed = parse_answer('{"diagnosis": "Noonan syndrome"}', labels)
    assert parsed.status == UNKNOWN_LABEL
    assert "Noonan syndrome" in parsed.reason


def test_ambiguous_answer_is_unknown_label(labels):
    parsed = parse_answer('{"diagnosis": "Down syndrome or Williams syndrome"}', labels)
    assert parsed.status == UNKNOWN_LABEL
    assert "ambiguous" in parsed.reason


def test_negated_answer_is_unknown_label(labels):
    parsed = parse_answer("not Down syndrome", labels)
    assert parsed.label == UNKNOWN


@pytest.mark.parametrize("text", ["", "   ", None, "<end_of_turn>"])
def test_empty_output_is_unparseable(labels, text):
    parsed = parse_answer(text, labels)
    assert parsed.status == UNPARSEABLE
    assert parsed.reason.startswith("empty")


def test_json_without_diagnosis_is_unparseable(labels):
    parsed = parse_answer('{"features": {"ears": "normal"}}', labels)
    assert parsed.status == UNPARSEABLE
    assert parsed.label == UNKNOWN


def test_prose_without_class_is_unparseable(labels):
    parsed = parse_answer("I cannot analyse medical images.", labels)
    assert parsed.status == UNPARSEABLE
    assert parsed.raw == "I cannot analyse medical images."


def test_raw_text_kept_in_record(labels):
    text = '```json\n{"diagnosis": "Down syndrome"}\n```'
    record = parse_answer(text, labels).to_dict()
    assert record["raw"] == text
    assert record["answer"] == {"diagnosis": "Down syndrome"}


def test_find_json_objects_skips_broken_blocks():
    assert find_json_objects('{"a": 1 {"b": 2} and {broken') == [{"b": 2}]
