"""02_convert on the phantom cohort, through papermill as a user runs it: the planted duplicates are
found, kept in one split with their originals, and no other people are merged."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from wgsy_lib.paths import params_dir
from wgsy_lib.runner import run_notebook


@pytest.fixture(scope="module")
def phantom_for_convert():
    from wgsy_lib.phantom import phantom_cohort_path

    return phantom_cohort_path()


def test_phantom_planted_duplicates_together(phantom_for_convert, tmp_path):
    cohort = phantom_for_convert
    parameters = yaml.safe_load((params_dir() / "demo" / "02_convert.yaml").read_text(encoding="utf-8"))
    parameters.update(manifest=str(cohort.manifest), annotations=[str(cohort.annotations)],
                      output_dir=str(tmp_path / "data"))

    run = run_notebook("02_convert", tmp_path / "02_convert.ipynb", parameters, timeout_s=300)
    assert run.ok, run.log_file.read_text(encoding="utf-8")[-3000:]

    manifest = pd.read_csv(cohort.manifest, dtype=str, keep_default_na=False)
    planted = manifest[manifest["planted_duplicate_of"] != ""]
    assert len(planted) > 0, "the phantom cohort should plant duplicates"
    split_of = {}
    for split in ("train", "val", "test"):
        for line in (tmp_path / "data" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            split_of[record["image"]] = record["split"]
    root = cohort.manifest.parent
    for copy in planted.itertuples():
        copy_split = split_of[str((root / copy.image).resolve())]
        original_split = split_of[str((root / copy.planted_duplicate_of).resolve())]
        assert copy_split == original_split, f"{copy.image} ({copy_split}) and its original ({original_split})"

    pairs = pd.read_csv(tmp_path / "data" / "duplicates.csv", dtype=str, keep_default_na=False)
    found = {frozenset((pair.image_a, pair.image_b)) for pair in pairs.itertuples()}
    for copy in planted.itertuples():
        assert frozenset((copy.image, copy.planted_duplicate_of)) in found, f"{copy.image} not found as a duplicate"
    card = json.loads((tmp_path / "data" / "data_card.json").read_text(encoding="utf-8"))
    assert card["duplicates"]["groups_joining_subjects"] == len(planted), "different people were merged"
    assert card["duplicates"]["largest_group_subjects"] == 2
