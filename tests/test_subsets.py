"""Seeded, stratified test subsets: determinism, stratification, whole subjects, bad requests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from wgsy_lib.errors import ConfigError, DataError
from wgsy_lib.subsets import (
    SUBSET_RECORD_NAME,
    allocate_per_label,
    apply_subset,
    check_subset_source,
    subset_test_file,
)

# label -> (subjects, photos per subject)
COHORT = {"Williams": (6, 2), "Down": (5, 3), "Goldenhar": (2, 1), "Healthy control": (20, 2)}


def write_test_file(path: Path, *, shuffle_seed: int | None = None) -> Path:
    rows = []
    for label, (subjects, photos) in COHORT.items():
        for subject in range(subjects):
            for photo in range(photos):
                rows.append({
                    "label": label,
                    "subject_id": f"{label[:3]}-{subject}",
                    "image_sha256": f"{label[:3]}{subject}{photo}",
                    "split": "test",
                })
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def chosen_images(out_dir: Path) -> list[str]:
    return [json.loads(line)["image_sha256"] for line in (out_dir / "test_subset.jsonl").read_text().splitlines()]


def test_same_seed_gives_same_subset(tmp_path):
    source = write_test_file(tmp_path / "test.jsonl")
    subset_test_file(source, tmp_path / "a", size=20, seed=7)
    subset_test_file(source, tmp_path / "b", size=20, seed=7)
    assert chosen_images(tmp_path / "a") == chosen_images(tmp_path / "b")


def test_other_seed_gives_other_subset(tmp_path):
    source = write_test_file(tmp_path / "test.jsonl")
    subset_test_file(source, tmp_path / "a", size=20, seed=7)
    subset_test_file(source, tmp_path / "b", size=20, seed=8)
    assert chosen_images(tmp_path / "a") != chosen_images(tmp_path / "b")


def test_subset_ignores_line_order(tmp_path):
    ordered = write_test_file(tmp_path / "ordered.jsonl")
    shuffled = write_test_file(tmp_path / "shuffled.jsonl", shuffle_seed=3)
    subset_test_file(ordered, tmp_path / "a", size=20, seed=1)
    subset_test_file(shuffled, tmp_path / "b", size=20, seed=1)
    assert sorted(chosen_images(tmp_path / "a")) == sorted(chosen_images(tmp_path / "b"))


def test_subset_keeps_label_shares(tmp_path):
    source = write_test_file(tmp_path / "test.jsonl")  # 12 Williams, 15 Down, 2 Goldenhar, 40 control
    _path, record = subset_test_file(source, tmp_path / "out", fraction=0.5, seed=0)
    assert record.size == 34  # round(69 * 0.5)
    # shares 7.39, 0.99, 19.71, 5.91: floors plus the three largest remainders
    assert record.label_counts == {"Down": 7, "Goldenhar": 1, "Healthy control": 20, "Williams": 6}


def test_subset_keeps_every_label_when_small(tmp_path):
    source = write_test_file(tmp_path / "test.jsonl")
    _path, record = subset_test_file(source, tmp_path / "out", size=4, seed=0)
    assert set(record.label_counts) == set(COHORT)


def test_subset_takes_whole_subjects_when_they_fit(tmp_path):
    source = write_test_file(tmp_path / "test.jsonl")
    _path, record = subset_test_file(source, tmp_path / "out", size=20, seed=5)
    rows = [json.loads(line) for line in (tmp_path / "out" / "test_subset.jsonl").read_text().splitlines()]
    photos_per_subject: dict[str, int] = {}
    for row in rows:
        photos_per_subject[row["subject_id"]] = photos_per_subject.get(row["subject_id"], 0) + 1
    expected = {f"{label[:3]}-{i}": photos for label, (count, photos) in COHORT.items() for i in range(count)}
    for subject, photos in photos_per_subject.items():
        if subject not in record.split_subjects:
            assert photos == expected[subject], subject


def test_subset_record_reproduces_lines(tmp_path):
    source = write_test_file(tmp_path / "test.jsonl")
    subset_path, record = subset_test_file(source, tmp_path / "out", size=10, seed=2)
    saved = json.loads((tmp_path / "out" / SUBSET_RECORD_NAME).read_text())
    source_lines = source.read_text().splitlines()
    assert saved["seed"] == 2
    assert saved["line_numbers"] == record.line_numbers
    assert [source_lines[n - 1] for n in saved["line_numbers"]] == subset_path.read_text().splitlines()


def test_subset_source_change_detected(tmp_path):
    source = write_test_file(tmp_path / "test.jsonl")
    subset_test_file(source, tmp_path / "out", size=10, seed=2)
    check_subset_source(tmp_path / "out" / SUBSET_RECORD_NAME)
    with source.open("a") as handle:
        handle.write(json.dumps({"label": "Down", "subject_id": "new"}) + "\n")
    with pytest.raises(DataError, match="changed since the subset was drawn"):
        check_subset_source(tmp_path / "out" / SUBSET_RECORD_NAME)


@pytest.mark.parametrize(
    ("size", "fraction", "message"),
    [
        (None, None, "set exactly one of subset_size"),
        (5, 0.5, "set exactly one of subset_size"),
        (0, None, "subset_size is 0; expected a whole number"),
        (1000, None, "has only 69 examples"),
        (None, 1.5, "subset_fraction is 1.5; expected a number greater than 0"),
    ],
)
def test_subset_bad_request_rejected(tmp_path, size, fraction, message):
    source = write_test_file(tmp_path / "test.jsonl")
    with pytest.raises(ConfigError, match=message):
        subset_test_file(source, tmp_path / "out", size=size, fraction=fraction, seed=0)


def test_subset_line_without_label_rejected(tmp_path):
    source = tmp_path / "test.jsonl"
    source.write_text(json.dumps({"label": "Down", "subject_id": "a"}) + "\n" + json.dumps({"subject_id": "b"}) + "\n")
    with pytest.raises(DataError, match=r"line 2 has label None"):
        subset_test_file(source, tmp_path / "out", size=1, seed=0)


def test_subset_missing_file_rejected(tmp_path):
    with pytest.raises(DataError, match="not found"):
        subset_test_file(tmp_path / "absent.jsonl", tmp_path / "out", size=1, seed=0)


def test_allocation_sums_to_size():
    counts = {"a": 7, "b": 3, "c": 1}
    for size in range(1, 12):
        assert sum(allocate_per_label(counts, size).values()) == size


def test_apply_subset_defaults_to_whole_file(tmp_path):
    source = write_test_file(tmp_path / "test.jsonl")
    assert apply_subset(source, tmp_path / "out") == source
    assert not (tmp_path / "out").exists()


def test_apply_subset_writes_subset(tmp_path):
    source = write_test_file(tmp_path / "test.jsonl")
    path = apply_subset(source, tmp_path / "out", size=10, seed=4)
    assert path == tmp_path / "out" / "test_subset.jsonl"
    assert len(path.read_text().splitlines()) == 10


def test_evaluate_plan_reads_subset(tmp_path, tiny_model_dir, labels):
    from eval_helpers import make_photos, write_eval_jsonl
    from wgsy_lib.evaluation import EvaluateConfig, plan_evaluation

    test_file = write_eval_jsonl(tmp_path / "test.jsonl", make_photos(tmp_path / "photos", 8), labels)
    config = EvaluateConfig.from_mapping({"base_model": str(tiny_model_dir), "test_files": [str(test_file)],
                                          "output_dir": str(tmp_path / "out"), "subset_size": 4, "subset_seed": 3})
    plan = plan_evaluation(config)
    record = json.loads((tmp_path / "out" / "subsets" / "test" / SUBSET_RECORD_NAME).read_text())
    assert plan.files[0].path == tmp_path / "out" / "subsets" / "test" / "test_subset.jsonl"
    assert len(plan.files[0].examples) == 4
    assert record["seed"] == 3
