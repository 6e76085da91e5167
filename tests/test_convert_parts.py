"""The parts of 02_convert on their own: duplicate finding, the data card, matching and instructions."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convert_cohort import blocky_image
from wgsy_lib.datacard import build_data_card, chi_square_p, render_markdown, standardised_mean_difference
from wgsy_lib.duplicates import DEFAULT_NEAR_THRESHOLD, HASH_BITS, find_duplicates, hamming_pairs, phash_bits
from wgsy_lib.errors import ConfigError
from wgsy_lib.instructions import build_instruction, explanation_from_features
from wgsy_lib.matching import match_controls


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**HASH_BITS - 1), min_size=0, max_size=40), st.integers(0, HASH_BITS))
def test_hamming_pairs_match_brute_force(hashes, threshold):
    expected = [(i, j, bin(hashes[i] ^ hashes[j]).count("1"))
                for i, j in itertools.combinations(range(len(hashes)), 2)
                if bin(hashes[i] ^ hashes[j]).count("1") <= threshold]
    assert hamming_pairs(hashes, threshold) == expected


def test_hamming_pairs_span_blocks():
    rng = np.random.default_rng(0)
    hashes = [int(value) for value in rng.integers(0, 2**63, size=2500, dtype=np.int64)]
    hashes[2400] = hashes[3] ^ 0b101 ^ (1 << 63)  # three bits apart, in different row blocks
    assert (3, 2400, 3) in hamming_pairs(hashes, 3)


def test_resized_reencoded_copy_is_near_duplicate(tmp_path):
    rng = np.random.default_rng(1)
    original = tmp_path / "a.png"
    blocky_image(rng, size=200).save(original)
    Image.open(original).resize((120, 120)).save(tmp_path / "b.jpg", quality=70)
    blocky_image(rng, size=200).save(tmp_path / "c.png")
    report = find_duplicates([original, tmp_path / "b.jpg", tmp_path / "c.png"])
    assert [(pair.first, pair.second, pair.kind) for pair in report.pairs] == [(0, 1, "near")]
    assert report.group == [0, 0, 2]


def test_exact_copy_found_without_near(tmp_path):
    rng = np.random.default_rng(2)
    blocky_image(rng).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
    blocky_image(rng).save(tmp_path / "c.png")
    report = find_duplicates([tmp_path / "a.png", tmp_path / "c.png", tmp_path / "b.png"], near=False)
    assert [(pair.first, pair.second, pair.kind) for pair in report.pairs] == [(0, 2, "exact")]
    assert report.groups == {0: [0, 2]}


def test_unrelated_images_are_far_apart(tmp_path):
    rng = np.random.default_rng(3)
    hashes = []
    for index in range(20):
        blocky_image(rng).save(tmp_path / f"{index}.png")
        hashes.append(phash_bits(tmp_path / f"{index}.png"))
    assert hamming_pairs(hashes, DEFAULT_NEAR_THRESHOLD) == []


def test_phash_sees_exif_rotation_upright(tmp_path):
    rng = np.random.default_rng(4)
    upright = blocky_image(rng, size=128)
    upright.save(tmp_path / "upright.png")
    rotated = upright.rotate(-90, expand=True)  # stored sideways, with a tag saying "rotate back"
    exif = Image.Exif()
    exif[0x0112] = 8
    buffer = io.BytesIO()
    rotated.save(buffer, format="JPEG", quality=95, exif=exif)
    (tmp_path / "tagged.jpg").write_bytes(buffer.getvalue())
    distance = bin(phash_bits(tmp_path / "upright.png") ^ phash_bits(tmp_path / "tagged.jpg")).count("1")
    assert distance <= DEFAULT_NEAR_THRESHOLD


def test_negative_threshold_rejected():
    with pytest.raises(ConfigError, match="threshold -1 must be 0 or more"):
        hamming_pairs([1, 2], -1)


def test_smd_known_value():
    assert standardised_mean_difference([1, 2, 3], [2, 3, 4]) == pytest.approx(-1.0)
    assert standardised_mean_difference([1], [2, 3]) is None


def test_chi_square_needs_two_categories():
    assert chi_square_p(["female"] * 5, ["female"] * 5) is None
    assert chi_square_p(["female"] * 30, ["male"] * 30) < 0.001


def _examples(patient_ages, control_ages, *, patient_source="clinic", control_source="clinic"):
    rows = []
    for index, age in enumerate(patient_ages):
        rows.append({"subject_id": f"p{index}", "label": "Williams syndrome", "age": age, "sex": "female",
                     "source": patient_source, "split": "train", "image": f"p{index}.png"})
    for index, age in enumerate(control_ages):
        rows.append({"subject_id": f"c{index}", "label": "healthy control", "age": age, "sex": "female",
                     "source": control_source, "split": "train", "image": f"c{index}.png"})
    return pd.DataFrame(rows)


def test_card_warns_when_controls_are_older():
    examples = _examples([4, 5, 6, 7], [30, 35, 40, 45])
    card = build_data_card(examples, class_order=["Williams syndrome", "healthy control"], control_label="healthy control")
    assert card["comparisons"][0]["age_smd"] < -2
    assert any("Williams syndrome are younger than healthy control" in warning for warning in card["warnings"])


def test_card_warns_on_constant_but_different_ages():
    card = build_data_card(_examples([5, 5], [30, 30]), class_order=["Williams syndrome", "healthy control"],
                           control_label="healthy control")
    assert card["comparisons"][0]["age_smd"] is None
    assert any("younger" in warning for warning in card["warnings"])


def test_card_warns_on_source_difference():
    examples = _examples([5] * 20, [5] * 20, patient_source="clinic", control_source="UTKFace")
    card = build_data_card(examples, class_order=["Williams syndrome", "healthy control"], control_label="healthy control")
    assert any("photo sources of Williams syndrome (clinic) differ from healthy control (UTKFace)" in warning
               for warning in card["warnings"])


def test_card_silent_when_balanced():
    examples = _examples([4, 6, 8, 10], [4, 6, 8, 10])
    card = build_data_card(examples, class_order=["Williams syndrome", "healthy control"], control_label="healthy control")
    assert card["warnings"] == []
    markdown = render_markdown(card)
    assert "| train | 4 | 4 |" in markdown


def test_matching_draws_controls_per_stratum():
    rows = [{"subject_id": f"p{index}", "label": "Down syndrome", "age": 6, "sex": "male"} for index in range(3)]
    rows += [{"subject_id": f"c{index}", "label": "healthy control", "age": age, "sex": sex}
             for index, (age, sex) in enumerate([(7, "male")] * 5 + [(30, "male")] * 5 + [(6, "female")] * 5)]
    rows.append({"subject_id": "c_unknown", "label": "healthy control", "age": None, "sex": ""})
    frame = pd.DataFrame(rows)
    result = match_controls(frame, control_label="healthy control", seed=0, ratio=1.0, age_bin_years=5)
    kept = frame[result.keep]
    assert set(kept[kept["label"] == "healthy control"]["age"]) == {7}
    assert (kept["label"] == "healthy control").sum() == 3
    assert result.controls_unmatchable == 1
    assert result.keep.tolist() == match_controls(frame, control_label="healthy control", seed=0).keep.tolist()


def test_matching_rejects_missing_control_label():
    frame = pd.DataFrame([{"subject_id": "p", "label": "Down syndrome", "age": 5, "sex": "male"}])
    with pytest.raises(ConfigError, match="control_label 'healthy control' does not occur"):
        match_controls(frame, control_label="healthy control", seed=0)


def test_explanation_lists_abnormal_features(labels):
    from wgsy_lib.features import load_features

    schema = load_features()
    features = {"forehead": "broad", "periorbital_fullness": "present", "ptosis": "uncertain", "nasal_bridge": "typical"}
    assert explanation_from_features(features, schema=schema) == "Observed: broad forehead, periorbital fullness."
    assert explanation_from_features({"forehead": "typical"}, schema=schema) == "No dysmorphic features observed."
    assert explanation_from_features(None, schema=schema) is None


def test_instruction_lists_allowed_diagnoses(labels):
    text = build_instruction("diagnosis", labels)
    assert "Choose exactly one of: Williams syndrome; Down syndrome; Goldenhar syndrome; healthy control." in text
    assert "diagnosis name only" in text
    assert '{"ws": "yes"}' in build_instruction("binary", labels)
