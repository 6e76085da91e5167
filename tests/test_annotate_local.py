"""The local backend on the tiny model and the phantom cohort: records written, raw text kept, no
network connection opened, and the notebook running headless with the demo parameter file."""

from __future__ import annotations

import socket

import pytest
import yaml

from wgsy_lib.annotate import AnnotateConfig, run_annotation
from wgsy_lib.annotation_store import AnnotationStore
from wgsy_lib.paths import params_dir
from wgsy_lib.runner import run_notebook


@pytest.fixture(scope="module")
def small_phantom():
    """A small phantom cohort (two subjects per class), cached like every phantom cohort."""
    from wgsy_lib.phantom import phantom_cohort_path

    return phantom_cohort_path(subjects_per_class=2, photos_per_subject=2)


@pytest.fixture
def no_network(monkeypatch):
    """Make every internet socket connection fail, so a photo sent anywhere fails the test."""
    original = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"the local backend opened a network connection to {address}")
        return original(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def _local_config(small_phantom, tiny_model_dir, tmp_path, **overrides):
    values = dict(manifest=str(small_phantom.manifest), backend="local", model=str(tiny_model_dir),
                  output_dir=str(tmp_path / "out"), max_answer_length=16, max_answer_length_cap=16, local_batch_size=4, limit=4,
                  max_error_fraction=0.0, reference=str(small_phantom.annotations))
    values.update(overrides)
    return AnnotateConfig(**values)


def test_local_backend_writes_records(small_phantom, tiny_model_dir, tmp_path, no_network):
    config = _local_config(small_phantom, tiny_model_dir, tmp_path)
    run = run_annotation(config)
    records = AnnotationStore(config.store_path).read()
    assert len(records) == 4
    assert run.attempted == 4
    for record in records:
        assert record.backend == "local"
        assert record.model == tiny_model_dir.name
        assert record.status in {"ok", "invalid", "truncated"}
        assert record.raw_text is not None
        assert record.usage["completion_tokens"] <= 16


def test_local_backend_resumes(small_phantom, tiny_model_dir, tmp_path, no_network):
    config = _local_config(small_phantom, tiny_model_dir, tmp_path, max_answer_length=4, max_answer_length_cap=4, limit=2)
    run_annotation(config)
    first = AnnotationStore(config.store_path).read()
    run_annotation(config)
    again = AnnotationStore(config.store_path).read()
    finished = [record for record in first if record.status not in ("truncated", "error")]
    assert len(again) == len(first) + (len(first) - len(finished))


def test_notebook_local_demo(small_phantom, tiny_model_dir, tmp_path):
    parameters = yaml.safe_load((params_dir() / "demo" / "01_annotate.yaml").read_text(encoding="utf-8"))
    parameters.update(manifest=str(small_phantom.manifest), model=str(tiny_model_dir),
                      reference=str(small_phantom.annotations), output_dir=str(tmp_path / "out"),
                      store=str(tmp_path / "out" / "annotations.jsonl"), limit=8, max_answer_length=8, max_answer_length_cap=8)
    run = run_notebook("01_annotate", tmp_path / "executed.ipynb", parameters, timeout_s=600)
    assert run.ok, run.log_file.read_text()[-3000:]
    out = tmp_path / "out"
    assert len(AnnotationStore(out / "annotations.jsonl").read()) == 8
    for name in ("status_counts.csv", "feature_values.csv", "feature_abnormal_fraction.png"):
        assert (out / name).is_file(), f"{name} missing"


def test_local_truncated_retried_with_doubled_limit(small_phantom, tiny_model_dir, tmp_path, no_network):
    config = _local_config(small_phantom, tiny_model_dir, tmp_path, max_answer_length=2, max_answer_length_cap=4, limit=2)
    run_annotation(config)
    for record in AnnotationStore(config.store_path).read():
        if record.status == "truncated":
            assert "retried with 4" in record.reason
            assert record.usage["completion_tokens"] == 4
