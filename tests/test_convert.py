"""02_convert end to end on small cohorts built in tmp_path: output format, duplicates, leakage guards,
answer formats, split methods and every bad input's message."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from convert_cohort import annotate, make_cohort
from wgsy_lib.convert import ConvertConfig, check_no_label_leak, convert
from wgsy_lib.errors import ConfigError, DataError
from wgsy_lib.splits import SmallClassError


def _config(manifest: Path, output: Path, **overrides) -> ConvertConfig:
    return ConvertConfig(manifest=str(manifest), output_dir=str(output), **overrides)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def cohort(tmp_path):
    return make_cohort(tmp_path / "cohort")


@pytest.fixture
def annotated(cohort):
    annotate(cohort, cohort.parent / "annotations.jsonl")
    return cohort


def test_writes_trl_conversational_records(annotated, tmp_path):
    output = tmp_path / "out"
    convert(_config(annotated, output, annotations=[str(annotated.parent / "annotations.jsonl")]))
    record = _read(output / "train.jsonl")[0]
    assert list(record) == ["messages", "images", "image", "image_sha256", "label", "subject_id", "split",
                            "answer_format", "instruction", "response", "feature_source", "source", "age", "sex"]
    user, assistant = record["messages"]
    assert user["role"] == "user"
    assert user["content"][0] == {"type": "image"}
    assert user["content"][1]["text"] == record["instruction"]
    assert assistant["content"][0]["text"] == record["response"]
    assert Path(record["image"]).is_absolute() and Path(record["image"]).is_file()
    assert record["images"] == [record["image"]]
    answer = json.loads(record["response"])
    assert answer["diagnosis"] == record["label"]
    assert answer["features"]["forehead"] == "broad"
    assert answer["explanation"] == "Observed: broad forehead, periorbital fullness."
    assert record["feature_source"] == "blind"
    for name in ("val.jsonl", "test.jsonl", "data_card.json", "data_card.md", "problems.csv", "duplicates.csv"):
        assert (output / name).is_file(), name


def test_instruction_does_not_depend_on_label(cohort, tmp_path):
    convert(_config(cohort, tmp_path / "out"))
    records = [record for split in ("train", "val", "test") for record in _read(tmp_path / "out" / f"{split}.jsonl")]
    assert len({record["instruction"] for record in records}) == 1
    instruction = records[0]["instruction"]
    for name in ("Williams syndrome", "Down syndrome", "Goldenhar syndrome", "healthy control"):
        assert name in instruction


def test_planted_duplicates_share_split(cohort, tmp_path):
    conversion = convert(_config(cohort, tmp_path / "out"))
    examples = conversion.examples
    planted = examples[examples["subject_id"].isin(["c0s0", "c0s1", "c0s2"])]
    assert planted["split"].nunique() == 1
    pairs = pd.read_csv(tmp_path / "out" / "duplicates.csv")
    assert set(pairs["kind"]) == {"exact", "near"}
    assert json.loads((tmp_path / "out" / "data_card.json").read_text())["duplicates"]["groups_joining_subjects"] == 1


def test_no_subject_in_two_splits(cohort, tmp_path):
    conversion = convert(_config(cohort, tmp_path / "out", seed=7))
    assert (conversion.examples.groupby("subject_id")["split"].nunique() == 1).all()


def test_conversion_is_byte_identical_for_seed(annotated, tmp_path):
    store = str(annotated.parent / "annotations.jsonl")
    convert(_config(annotated, tmp_path / "a", annotations=[store], seed=3))
    convert(_config(annotated, tmp_path / "b", annotations=[store], seed=3))
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "problems.csv", "duplicates.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_diagnosis_format_answers_name_only(cohort, tmp_path):
    convert(_config(cohort, tmp_path / "out", answer_format="diagnosis"))
    for record in _read(tmp_path / "out" / "val.jsonl"):
        assert record["response"] == record["label"]
        assert record["answer_format"] == "diagnosis"


def test_binary_format_writes_ws_yes_no(tmp_path):
    manifest = make_cohort(tmp_path / "cohort", classes=("Williams syndrome", "healthy control"))
    convert(_config(manifest, tmp_path / "out", answer_format="binary"))
    for record in _read(tmp_path / "out" / "train.jsonl"):
        expected = "yes" if record["label"] == "Williams syndrome" else "no"
        assert json.loads(record["response"]) == {"ws": expected}
        assert "Does this person have Williams syndrome?" in record["instruction"]


def test_binary_format_rejects_third_class(cohort, tmp_path):
    with pytest.raises(ConfigError, match=r"binary.*also has \['Down syndrome'\]"):
        convert(_config(cohort, tmp_path / "out", answer_format="binary"))


def test_system_prompt_comes_first(cohort, tmp_path):
    convert(_config(cohort, tmp_path / "out", system_prompt="You are a clinical geneticist."))
    record = _read(tmp_path / "out" / "train.jsonl")[0]
    assert record["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "You are a clinical geneticist."}]}


def test_label_conditioned_only_in_val_instruction_is_error(cohort, tmp_path):
    store = annotate(cohort, cohort.parent / "conditioned.jsonl", mode="label_conditioned")
    with pytest.raises(DataError, match=r"photo photos/.* has only a label-conditioned annotation.*leaks the label"):
        convert(_config(cohort, tmp_path / "out", annotations=[str(store)], features_in_instruction=True))


def test_label_conditioned_fills_only_train_answers(cohort, tmp_path):
    store = annotate(cohort, cohort.parent / "conditioned.jsonl", mode="label_conditioned")
    conversion = convert(_config(cohort, tmp_path / "out", annotations=[str(store)], allow_label_conditioned_train=True))
    examples = conversion.examples
    assert set(examples[examples["split"] == "train"]["feature_source"]) == {"label_conditioned"}
    assert set(examples[examples["split"] != "train"]["feature_source"]) == {"none"}
    for record in _read(tmp_path / "out" / "test.jsonl"):
        assert "features" not in json.loads(record["response"])


def test_label_conditioned_ignored_by_default(cohort, tmp_path):
    store = annotate(cohort, cohort.parent / "conditioned.jsonl", mode="label_conditioned")
    conversion = convert(_config(cohort, tmp_path / "out", annotations=[str(store)]))
    assert set(conversion.examples["feature_source"]) == {"none"}


def test_blind_features_in_instruction(annotated, tmp_path):
    convert(_config(annotated, tmp_path / "out", annotations=[str(annotated.parent / "annotations.jsonl")],
                    features_in_instruction=True))
    record = _read(tmp_path / "out" / "test.jsonl")[0]
    assert "did not know the diagnosis: broad forehead, periorbital fullness, typical nasal bridge." in record["instruction"]
    assert record["feature_source"] == "blind"


def test_leak_check_rejects_conditioned_test_example():
    examples = pd.DataFrame([{"image": "a.png", "split": "test", "feature_source": "label_conditioned"}])
    with pytest.raises(DataError, match="leaks the label.*first: a.png, split test"):
        check_no_label_leak(examples)


def test_features_in_instruction_needs_annotations(cohort, tmp_path):
    with pytest.raises(ConfigError, match="features_in_instruction is true but no annotation stores"):
        convert(_config(cohort, tmp_path / "out", features_in_instruction=True))


def test_annotation_filter_by_model(cohort, tmp_path):
    store = annotate(cohort, cohort.parent / "annotations.jsonl")
    conversion = convert(_config(cohort, tmp_path / "out", annotations=[str(store)], annotation_model="other-model"))
    assert set(conversion.examples["feature_source"]) == {"none"}
    assert set(conversion.problem_table["action"]) == {"kept without features"}


def _edit_manifest(manifest: Path, row: int, **values) -> None:
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for column, value in values.items():
        frame.loc[row, column] = value
    frame.to_csv(manifest, index=False)


def test_unknown_label_error_names_row(cohort, tmp_path):
    _edit_manifest(cohort, 3, label="Unknown", label_raw="syndrome X")
    with pytest.raises(DataError, match=r"row 5 \(photos/c0s1_1.png\): label 'Unknown' \(raw 'syndrome X'\).*unknown_label: skip"):
        convert(_config(cohort, tmp_path / "out"))


def test_unknown_label_skip_lists_row(cohort, tmp_path):
    _edit_manifest(cohort, 3, label="Unknown", label_raw="syndrome X")
    convert(_config(cohort, tmp_path / "out", unknown_label="skip"))
    problems = pd.read_csv(tmp_path / "out" / "problems.csv")
    assert problems[["row", "problem", "action"]].values.tolist() == [[5, "unknown label", "skipped"]]


def test_missing_image_error_names_row(cohort, tmp_path):
    (cohort.parent / "photos/c1s0_0.png").unlink()
    with pytest.raises(DataError, match=r"row \d+ \(photos/c1s0_0.png\): photo .*c1s0_0.png not found.*missing_image: skip"):
        convert(_config(cohort, tmp_path / "out"))


def test_unreadable_image_skip_lists_row(cohort, tmp_path):
    (cohort.parent / "photos/c1s0_0.png").write_bytes(b"not an image")
    convert(_config(cohort, tmp_path / "out", missing_image="skip"))
    problems = pd.read_csv(tmp_path / "out" / "problems.csv")
    assert problems["problem"].tolist() == ["unreadable image"]
    assert problems["image"].tolist() == ["photos/c1s0_0.png"]


def test_too_many_skipped_rows_fail(cohort, tmp_path):
    for index in range(4):
        _edit_manifest(cohort, index, label="Unknown")
    with pytest.raises(DataError, match=r"4 of 38 manifest rows skipped.*max_skipped_fraction = 0.05"):
        convert(_config(cohort, tmp_path / "out", unknown_label="skip", max_skipped_fraction=0.05))


def test_missing_annotation_error_names_photo(cohort, tmp_path):
    store = annotate(cohort, cohort.parent / "annotations.jsonl", only={"photos/c0s0_0.png"})
    with pytest.raises(DataError, match=r"row \d+ \(photos/.*\): no usable annotation.*missing_annotation: skip"):
        convert(_config(cohort, tmp_path / "out", annotations=[str(store)], missing_annotation="error"))


def test_missing_annotation_skip_counts_rows(cohort, tmp_path):
    frame = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    unannotated = {"photos/c2s5_1.png"}
    store = annotate(cohort, cohort.parent / "annotations.jsonl", only=set(frame["image"]) - unannotated)
    conversion = convert(_config(cohort, tmp_path / "out", annotations=[str(store)], missing_annotation="skip"))
    assert set(conversion.problem_table["image"]) == unannotated
    assert len(conversion.examples) == len(frame) - 1


def test_small_class_error_and_skip(tmp_path):
    manifest = make_cohort(tmp_path / "cohort", subjects_per_class=4, plant_duplicates=False)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame = frame[~frame["subject_id"].isin(["c1s2", "c1s3"])]  # Down syndrome: 2 people
    frame.to_csv(manifest, index=False)
    with pytest.raises(SmallClassError, match="'Down syndrome' has 2") as raised:
        convert(_config(manifest, tmp_path / "out"))
    assert "joined because their photos are duplicates" in str(raised.value)
    assert "small_class: skip" in str(raised.value)
    conversion = convert(_config(manifest, tmp_path / "out", small_class="skip", max_skipped_fraction=0.5))
    assert "Down syndrome" not in set(conversion.examples["label"])
    assert set(conversion.problem_table["problem"]) == {"class too small"}


def test_column_split_used_as_given(cohort, tmp_path):
    frame = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    splits = {"c0s0": "train", "c0s1": "train", "c0s2": "train"}
    frame["split"] = [splits.get(subject, ("train", "val", "test")[int(subject[-1]) % 3]) for subject in frame["subject_id"]]
    frame.to_csv(cohort, index=False)
    conversion = convert(_config(cohort, tmp_path / "out", split_method="column"))
    assert conversion.examples["split"].tolist() == frame["split"].tolist()


def test_column_split_rejects_divided_duplicates(cohort, tmp_path):
    frame = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    frame["split"] = "train"
    frame.loc[frame["image"] == "photos/c0s2_exact.png", "split"] = "test"
    frame.loc[frame["subject_id"] == "c0s2", "split"] = "test"
    frame.to_csv(cohort, index=False)
    with pytest.raises(DataError, match="same person or duplicate photos but sit in different splits"):
        convert(_config(cohort, tmp_path / "out", split_method="column"))


def test_kfold_writes_fold_folders(cohort, tmp_path):
    output = tmp_path / "out"
    convert(_config(cohort, output, split_method="kfold", folds=3, test_fraction=0.2))
    test = (output / "test.jsonl").read_bytes()
    val_subjects = []
    for fold in range(3):
        folder = output / f"fold_{fold}"
        assert (folder / "test.jsonl").read_bytes() == test
        train = {record["subject_id"] for record in _read(folder / "train.jsonl")}
        val = {record["subject_id"] for record in _read(folder / "val.jsonl")}
        assert not train & val
        assert (folder / "data_card.json").is_file()
        val_subjects.append(val)
    assert not set.intersection(*val_subjects)
    test_subjects = {record["subject_id"] for record in _read(output / "test.jsonl")}
    assert not test_subjects & set.union(*val_subjects)


def test_matching_keeps_controls_like_patients(tmp_path):
    manifest = make_cohort(tmp_path / "cohort", subjects_per_class=12, plant_duplicates=False,
                           classes=("Williams syndrome", "healthy control"))
    conversion = convert(_config(manifest, tmp_path / "out", match_controls=True, match_age_bin_years=20,
                                 max_skipped_fraction=0.0))
    strata = conversion.matching.strata
    assert (strata["controls_kept"] <= strata["patients"]).all()
    kept_controls = conversion.examples[conversion.examples["label"] == "healthy control"]["subject_id"].nunique()
    assert kept_controls == strata["controls_kept"].sum()
    card = json.loads((tmp_path / "out" / "data_card.json").read_text())
    assert card["matching"] == strata.to_dict(orient="records")


def test_config_requires_manifest():
    with pytest.raises(ConfigError, match="manifest = '': is empty; set manifest to the cohort manifest CSV"):
        ConvertConfig.from_mapping({"output_dir": "out"})


def test_config_fractions_must_add_up():
    with pytest.raises(ConfigError, match="must add up to 1"):
        ConvertConfig.from_mapping({"manifest": "m.csv", "output_dir": "out", "train_fraction": 0.9})


def test_empty_split_is_error(cohort, tmp_path):
    frame = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    frame["split"] = "train"
    frame.loc[frame["label"] == "healthy control", "split"] = "val"
    frame.to_csv(cohort, index=False)
    conversion = convert(_config(cohort, tmp_path / "out", split_method="column"))
    assert set(conversion.examples["split"]) == {"train", "val"}
    assert not (tmp_path / "out" / "test.jsonl").exists()


def test_cli_rejects_bad_parameter_file(tmp_path, capsys):
    from wgsy_lib.cli import main

    params = tmp_path / "convert.yaml"
    params.write_text("manifest: m.csv\noutput_dir: out\nsplit_metod: kfold\n", encoding="utf-8")
    assert main(["convert", str(params)]) == 2
    assert "'split_metod' (did you mean 'split_method'?)" in capsys.readouterr().err


def test_column_split_error_names_manifest_line(cohort, tmp_path):
    frame = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    frame["split"] = "train"
    frame.loc[0, "label"] = "Unknown"  # skipped, so positions and manifest lines differ by one more
    frame.loc[5, "split"] = ""
    frame.to_csv(cohort, index=False)
    with pytest.raises(DataError, match=r"row 7: split '' is not one of"):
        convert(_config(cohort, tmp_path / "out", split_method="column", unknown_label="skip"))


def test_rerun_removes_other_methods_files(cohort, tmp_path):
    output = tmp_path / "out"
    convert(_config(cohort, output))
    convert(_config(cohort, output, split_method="kfold", folds=2, test_fraction=0.0))
    assert not (output / "train.jsonl").exists()
    assert not (output / "test.jsonl").exists()
    assert (output / "fold_1" / "val.jsonl").is_file()
    convert(_config(cohort, output))
    assert not (output / "fold_0").exists()
    assert (output / "train.jsonl").is_file()
