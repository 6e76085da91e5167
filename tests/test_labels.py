"""Label normalisation: every class, synonym, abbreviation and negation case, one by one."""

import pytest

from wgsy_lib.errors import ConfigError
from wgsy_lib.labels import UNKNOWN, load_labels

WILLIAMS, DOWN, GOLDENHAR, CONTROL = "Williams syndrome", "Down syndrome", "Goldenhar syndrome", "healthy control"

CASES = [
    # canonical names, case and punctuation
    ("Williams syndrome", WILLIAMS),
    ("WILLIAMS SYNDROME", WILLIAMS),
    ("williams_syndrome", WILLIAMS),
    ("Williams-Beuren syndrome", WILLIAMS),
    ("Down's Syndrome", DOWN),
    ("downs syndrome", DOWN),
    ("Trisomy 21", DOWN),
    ("T21", DOWN),
    ("Goldenhar", GOLDENHAR),
    ("oculo-auriculo-vertebral spectrum", GOLDENHAR),
    ("healthy control", CONTROL),
    ("Healthy", CONTROL),
    ("normal", CONTROL),
    # abbreviations and folder names
    ("WS", WILLIAMS),
    ("ws", WILLIAMS),
    ("WBS", WILLIAMS),
    ("DS", DOWN),
    ("down", DOWN),
    ("OAVS", GOLDENHAR),
    # Chinese
    ("威廉姆斯综合征", WILLIAMS),
    ("威廉斯综合症", WILLIAMS),
    ("唐氏综合征", DOWN),
    ("21三体综合征", DOWN),
    ("先天愚型", DOWN),
    ("戈尔登哈尔综合征", GOLDENHAR),
    ("健康对照", CONTROL),
    ("正常", CONTROL),
    # phrases inside sentences
    ("Diagnosis: Williams syndrome.", WILLIAMS),
    ("The most likely diagnosis is Down syndrome (trisomy 21).", DOWN),
    ("诊断：威廉姆斯综合征", WILLIAMS),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_normalize_known(labels, text, expected):
    result = labels.normalize(text)
    assert result.label == expected
    assert result.raw == text


UNKNOWN_CASES = [
    ("", "empty"),
    ("   ", "empty"),
    ("N/A", "empty"),
    ("n.a.", "empty"),
    (None, "empty"),
    ("unknown", "empty"),
    ("abnormal", "matches no class"),
    ("atypical", "matches no class"),
    ("words", "matches no class"),
    ("looking down", "matches no class"),
    ("wsx", "matches no class"),
    ("Noonan syndrome", "matches no class"),
    ("not Down syndrome", "negated"),
    ("no Williams syndrome", "negated"),
    ("Down syndrome is ruled out", "negated"),
    ("Down syndrome is unlikely", "negated"),
    ("不是唐氏综合征", "negated"),
    ("排除威廉姆斯综合征", "negated"),
    ("不正常", "negated"),
    ("Williams syndrome or Down syndrome", "ambiguous"),
]


@pytest.mark.parametrize("text,reason", UNKNOWN_CASES)
def test_normalize_unknown_keeps_raw(labels, text, reason):
    result = labels.normalize(text)
    assert result.label == UNKNOWN
    assert reason in result.reason
    assert result.raw == ("" if text is None else text)


def test_negation_of_one_class_keeps_other(labels):
    result = labels.normalize("Williams syndrome rather than Down syndrome")
    assert result.label == WILLIAMS


@pytest.mark.parametrize("value,expected", [(1, WILLIAMS), ("0", CONTROL), ("yes", WILLIAMS), (False, CONTROL)])
def test_binary_labels(labels, value, expected):
    assert labels.from_binary(value).label == expected


def test_binary_rejects_other_values(labels):
    result = labels.from_binary("2")
    assert result.label == UNKNOWN
    assert "binary" in result.reason


def test_user_adds_class_by_yaml_only(tmp_path):
    path = tmp_path / "labels.yaml"
    path.write_text(
        "classes:\n"
        "  - name: Noonan syndrome\n"
        "    omim: '163950'\n"
        "    synonyms: {en: [Noonan syndrome, NS], zh: [努南综合征]}\n"
        "  - name: healthy control\n"
        "    synonyms: {en: [control, normal]}\n",
        encoding="utf-8",
    )
    labels = load_labels(path)
    assert labels.names == ["Noonan syndrome", "healthy control"]
    assert labels.normalize("noonan syndrome").label == "Noonan syndrome"
    assert labels.normalize("努南综合征").label == "Noonan syndrome"
    assert labels.normalize("Williams syndrome").label == UNKNOWN


def test_duplicate_synonym_rejected(tmp_path):
    path = tmp_path / "labels.yaml"
    path.write_text(
        "classes:\n  - name: A syndrome\n    synonyms: {en: [shared]}\n  - name: B syndrome\n    synonyms: {en: [Shared]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="synonym 'Shared' belongs to both 'A syndrome' and 'B syndrome'"):
        load_labels(path)


def test_bad_omim_rejected(tmp_path):
    path = tmp_path / "labels.yaml"
    path.write_text("classes:\n  - name: A syndrome\n    omim: '12'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="OMIM id '12' must be six digits"):
        load_labels(path)


def test_missing_label_file_named(tmp_path):
    with pytest.raises(ConfigError, match="label file .*nothere.yaml not found"):
        load_labels(tmp_path / "nothere.yaml")


def test_canonical_classes_and_omim(labels):
    assert labels.names == [WILLIAMS, DOWN, GOLDENHAR, CONTROL]
    assert labels.get(WILLIAMS).omim == "194050"
    assert labels.get(DOWN).omim == "190685"
    assert labels.get(GOLDENHAR).omim == "164210"
    assert labels.get(CONTROL).omim is None
