"""notebooks/01_annotate.ipynb run headless through papermill with the demo parameter files."""

from __future__ import annotations

import json

import pytest
import yaml

from annotate_helpers import make_cohort
from wgsy_lib.annotation_store import AnnotationStore
from wgsy_lib.openai_mock import MockOpenAIServer
from wgsy_lib.paths import params_dir
from wgsy_lib.phantom import phantom_cohort_path
from wgsy_lib.runner import run_notebook

FAKE_KEY = "sk-wgsy-FAKE-NOTEBOOK-KEY-41c9e2"


def _demo_parameters(name: str, tmp_path, **overrides) -> dict:
    parameters = yaml.safe_load((params_dir() / "demo" / name).read_text(encoding="utf-8"))
    parameters.update(output_dir=str(tmp_path / "out"), store=str(tmp_path / "out" / "annotations.jsonl"))
    parameters.update(overrides)
    return parameters


def test_notebook_against_server(tmp_path):
    cohort = phantom_cohort_path(subjects_per_class=2, photos_per_subject=2)
    manifest = cohort.manifest
    with MockOpenAIServer() as server:
        server.script.extend(["fenced", "refusal"])
        parameters = _demo_parameters("01_annotate_server.yaml", tmp_path, manifest=str(manifest),
                                      base_url=server.base_url, key_env_var="WGSY_NOTEBOOK_KEY",
                                      reference=str(cohort.annotations))
        run = run_notebook("01_annotate", tmp_path / "executed.ipynb", parameters,
                           env={"WGSY_NOTEBOOK_KEY": FAKE_KEY}, timeout_s=300)
    assert run.ok, run.log_file.read_text()[-3000:]

    out = tmp_path / "out"
    statuses = [record.status for record in AnnotationStore(out / "annotations.jsonl").read()]
    assert statuses.count("refused") == 1
    assert statuses.count("ok") == len(statuses) - 1
    for name in ("status_counts.csv", "feature_values.csv", "feature_abnormal_fraction.png", "agreement.csv"):
        assert (out / name).is_file(), f"{name} missing"
    assert len(list((out / "phenopackets").glob("*.json"))) == cohort.subjects
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), f"{path} contains the API key"


def test_notebook_rejects_misspelt_parameter(tmp_path):
    manifest = make_cohort(tmp_path / "cohort", 1)
    parameters = _demo_parameters("01_annotate_server.yaml", tmp_path, manifest=str(manifest), concurency=4)
    run = run_notebook("01_annotate", tmp_path / "executed.ipynb", parameters, timeout_s=300)
    assert not run.ok
    assert "did you mean 'concurrency'" in run.log_file.read_text()
