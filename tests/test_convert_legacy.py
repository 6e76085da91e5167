"""02_convert on a cohort imported from the earlier scripts' annotation file: their annotations were
written by a model given the diagnosis, so they may fill train answers only and never reach a
validation or test example."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from convert_cohort import blocky_image
from wgsy_lib.cohort import import_legacy
from wgsy_lib.convert import ConvertConfig, convert
from wgsy_lib.errors import DataError
from wgsy_lib.manifest import write_manifest
from wgsy_lib.paths import params_dir
from wgsy_lib.runner import run_notebook


@pytest.fixture
def legacy_cohort(tmp_path, labels):
    """A legacy `train_ws_features.json` of 24 photos (binary labels), imported into a manifest and a store."""
    root = tmp_path / "data"
    rng = np.random.default_rng(5)
    records = []
    for index in range(24):
        relative = f"{'ws' if index % 2 == 0 else 'hc'}/{index}.jpg"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        blocky_image(rng).save(root / relative, quality=90)
        record = {"image": relative, "label": 1 if index % 2 == 0 else 0}
        if index % 3 == 0:
            record["model_raw_text"] = '```json\n{"forehead": "broad", "nasal_bridge": "flat"}\n```'
        else:
            record["parsed_annotation"] = {"Forehead": "broad forehead", "Periorbital fullness": "yes"}
        records.append(record)
    legacy_file = tmp_path / "train_ws_features.json"
    legacy_file.write_text(json.dumps(records), encoding="utf-8")

    store = tmp_path / "legacy_annotations.jsonl"
    result = import_legacy(legacy_file, root, labels, annotations_out=store)
    manifest = write_manifest(result.frame, tmp_path / "cohort" / "manifest.csv", data_root=root)
    return manifest, store


def test_legacy_features_stay_in_train(legacy_cohort, tmp_path):
    manifest, store = legacy_cohort
    parameters = yaml.safe_load((params_dir() / "demo" / "02_convert.yaml").read_text(encoding="utf-8"))
    parameters.update(manifest=str(manifest), annotations=[str(store)], output_dir=str(tmp_path / "out"),
                      allow_label_conditioned_train=True)

    run = run_notebook("02_convert", tmp_path / "02_convert.ipynb", parameters, timeout_s=300)
    assert run.ok, run.log_file.read_text(encoding="utf-8")[-3000:]

    train = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {record["feature_source"] for record in train} == {"label_conditioned"}
    assert all("features" in json.loads(record["response"]) for record in train)
    for split in ("val", "test"):
        lines = (tmp_path / "out" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert lines, f"{split} is empty"
        for record in map(json.loads, lines):
            assert record["feature_source"] == "none"
            assert json.loads(record["response"]) == {"diagnosis": record["label"]}
            assert "forehead" not in record["instruction"]


def test_legacy_features_in_instruction_is_error(legacy_cohort, tmp_path):
    manifest, store = legacy_cohort
    config = ConvertConfig(manifest=str(manifest), annotations=[str(store)], output_dir=str(tmp_path / "out"),
                           features_in_instruction=True)
    with pytest.raises(DataError, match=r"has only a label-conditioned annotation.*leaks the label"):
        convert(config)


def test_legacy_binary_answers(legacy_cohort, tmp_path):
    manifest, store = legacy_cohort
    conversion = convert(ConvertConfig(manifest=str(manifest), annotations=[str(store)], output_dir=str(tmp_path / "out"),
                                       answer_format="binary"))
    for record in conversion.examples.itertuples():
        expected = '{"ws": "yes"}' if record.label == "Williams syndrome" else '{"ws": "no"}'
        assert record.response == expected
