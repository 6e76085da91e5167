"""01_annotate against a local OpenAI-compatible mock server: every answer and failure an API
can return, retries, structured-output fallback, image encoding, modes and resume."""

from __future__ import annotations

import base64
import io
import json
import logging
import time

import pytest
from PIL import Image

from annotate_helpers import make_cohort, server_config
from wgsy_lib.annotate import AnnotateConfig, plan_annotation, run_annotation
from wgsy_lib.annotation_store import AnnotationStore
from wgsy_lib.errors import AnnotationError, ConfigError
from wgsy_lib.features import load_features
from wgsy_lib.openai_mock import MockOpenAIServer


@pytest.fixture
def server():
    with MockOpenAIServer() as mock:
        yield mock


@pytest.fixture
def cohort(tmp_path):
    return make_cohort(tmp_path, 4)


def _records(config):
    return AnnotationStore(config.store_path).read()


@pytest.mark.parametrize("scenario, status", [
    ("ok", "ok"), ("fenced", "ok"), ("two_blocks", "ok"), ("backticks", "ok"), ("invalid", "invalid"),
    ("refusal", "refused"), ("refusal_text", "refused"), ("missing_fields", "ok"), ("extra_fields", "ok"),
    ("bad_values", "ok"),
])
def test_answer_scenario_status(server, cohort, tmp_path, scenario, status):
    server.settings.default = scenario
    config = server_config(cohort, server, tmp_path)
    run_annotation(config)
    records = _records(config)
    assert len(records) == 4
    assert {record.status for record in records} == {status}
    assert all(record.raw_text for record in records), "raw text must be kept"


def test_out_of_schema_values_become_uncertain(server, cohort, tmp_path):
    server.settings.default = "bad_values"
    config = server_config(cohort, server, tmp_path)
    run = run_annotation(config)
    record = _records(config)[0]
    assert record.features["forehead"] == "uncertain"
    assert record.features["chin_size"] == "uncertain"
    assert len(record.out_of_schema) == 2
    assert run.out_of_schema == 8


def test_missing_and_extra_fields_counted(server, cohort, tmp_path):
    server.script.extend(["missing_fields", "extra_fields"])
    config = server_config(cohort, server, tmp_path, concurrency=1)
    run_annotation(config)
    missing, extra = _records(config)[:2]
    assert sum(item.endswith("missing") for item in missing.out_of_schema) == 10
    assert all(value == "uncertain" for name, value in missing.features.items() if f"{name}: missing" in missing.out_of_schema)
    assert any("skin_tone" in item for item in extra.out_of_schema)
    assert set(extra.features) == set(load_features().names)


def test_truncated_answer_retried_with_doubled_limit(server, cohort, tmp_path):
    server.script.append("truncated")
    config = server_config(cohort, server, tmp_path, concurrency=1, limit=1)
    run_annotation(config)
    record = _records(config)[0]
    assert record.status == "ok"
    assert "retried with 2048" in record.reason
    limits = [request["max_tokens"] for request in server.chat_requests()]
    assert limits == [1024, 2048]


def test_truncated_twice_recorded_truncated(server, cohort, tmp_path):
    server.settings.default = "truncated"
    config = server_config(cohort, server, tmp_path, concurrency=1, limit=1, max_answer_length=256, max_answer_length_cap=512)
    run_annotation(config)
    record = _records(config)[0]
    assert record.status == "truncated"
    assert len(server.chat_requests()) == 2


def test_rate_limit_honours_retry_after(server, cohort, tmp_path):
    server.script.append("rate_limit")
    server.settings.retry_after_s = 1.0
    config = server_config(cohort, server, tmp_path, concurrency=1, limit=1)
    started = time.monotonic()
    run_annotation(config)
    assert time.monotonic() - started >= 1.0
    assert _records(config)[0].status == "ok"
    assert len(server.chat_requests()) == 2


def test_exhausted_quota_stops_with_billing_message(server, cohort, tmp_path):
    server.settings.default = "quota"
    config = server_config(cohort, server, tmp_path, concurrency=1)
    with pytest.raises(AnnotationError, match="billing"):
        run_annotation(config)
    assert len(server.chat_requests()) == 1, "an exhausted quota must not be retried or continued"
    assert _records(config) == []


def test_server_error_retried(server, cohort, tmp_path):
    server.script.append("server_error")
    config = server_config(cohort, server, tmp_path, concurrency=1, limit=1)
    run_annotation(config)
    assert _records(config)[0].status == "ok"
    assert len(server.chat_requests()) == 2


def test_persistent_errors_fail_run_with_fraction(server, cohort, tmp_path):
    server.settings.default = "server_error"
    config = server_config(cohort, server, tmp_path, max_attempts=2)
    with pytest.raises(AnnotationError, match="max_error_fraction"):
        run_annotation(config)
    records = _records(config)
    assert {record.status for record in records} == {"error"}
    assert all("500" in record.reason for record in records)


def test_rejected_request_recorded_as_error(server, cohort, tmp_path):
    server.script.append("bad_request")
    config = server_config(cohort, server, tmp_path, concurrency=1, max_error_fraction=0.5)
    run_annotation(config)
    statuses = [record.status for record in _records(config)]
    assert statuses.count("error") == 1
    assert len(server.chat_requests()) == 4, "a 400 for one photo is not retried"


def test_timeout_retried(server, cohort, tmp_path):
    server.script.append("timeout")
    server.settings.timeout_sleep_s = 1.5
    config = server_config(cohort, server, tmp_path, concurrency=1, limit=1, request_timeout_s=0.5)
    run_annotation(config)
    assert _records(config)[0].status == "ok"
    assert len(server.chat_requests()) == 2


def test_server_ignoring_response_format(server, cohort, tmp_path):
    server.settings.ignore_response_format = True
    config = server_config(cohort, server, tmp_path)
    run_annotation(config)
    assert {record.status for record in _records(config)} == {"ok"}


def test_server_rejecting_response_format_falls_back(server, cohort, tmp_path, caplog):
    server.settings.reject_response_format = True
    config = server_config(cohort, server, tmp_path, concurrency=1)
    with caplog.at_level(logging.WARNING):
        run_annotation(config)
    assert {record.status for record in _records(config)} == {"ok"}
    assert "plain JSON" in caplog.text
    assert "response_format" not in server.chat_requests()[-1]


def test_structured_output_sent(server, cohort, tmp_path):
    config = server_config(cohort, server, tmp_path, limit=1)
    run_annotation(config)
    response_format = server.chat_requests()[0]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True


def test_image_reencoded_and_downscaled(server, tmp_path):
    manifest = make_cohort(tmp_path, 1, size=(3000, 2000))
    # A PNG saved under a .jpg name: the MIME type must follow the bytes sent, not the extension.
    path = tmp_path / "images" / "photo_000.jpg"
    Image.open(path).save(path, format="PNG")
    config = server_config(manifest, server, tmp_path, image_max_side=512)
    run_annotation(config)
    part = server.chat_requests()[0]["messages"][1]["content"][1]
    header, data = part["image_url"]["url"].split(",", 1)
    assert header == "data:image/jpeg;base64"
    sent = Image.open(io.BytesIO(base64.b64decode(data)))
    assert sent.format == "JPEG"
    assert max(sent.size) == 512


def test_blind_prompt_hides_label(server, cohort, tmp_path):
    config = server_config(cohort, server, tmp_path)
    run_annotation(config)
    text = json.dumps([request["messages"] for request in server.chat_requests()])
    for label in ("Williams", "Down syndrome", "Goldenhar", "healthy control"):
        assert label not in text
    assert {record.mode for record in _records(config)} == {"blind"}


def test_label_conditioned_mode_recorded(server, cohort, tmp_path):
    config = server_config(cohort, server, tmp_path, mode="label_conditioned")
    run_annotation(config)
    text = json.dumps([request["messages"] for request in server.chat_requests()])
    assert "confirmed diagnosis of Williams syndrome" in text
    assert {record.mode for record in _records(config)} == {"label_conditioned"}


def test_rerun_sends_only_missing(server, cohort, tmp_path):
    config = server_config(cohort, server, tmp_path, limit=2)
    run_annotation(config)
    assert len(server.chat_requests()) == 2
    rerun = server_config(cohort, server, tmp_path)
    plan = plan_annotation(rerun)
    assert (plan.done, len(plan.todo)) == (2, 2)
    run_annotation(rerun, plan)
    run_annotation(rerun)
    assert len(server.chat_requests()) == 4
    keys = [record.key for record in _records(rerun)]
    assert len(keys) == len(set(keys)) == 4


def test_new_mode_or_model_annotates_again(server, cohort, tmp_path):
    run_annotation(server_config(cohort, server, tmp_path))
    assert len(plan_annotation(server_config(cohort, server, tmp_path, model="other-model")).todo) == 4
    assert len(plan_annotation(server_config(cohort, server, tmp_path, mode="label_conditioned")).todo) == 4


def test_error_records_retried_on_rerun(server, cohort, tmp_path):
    server.script.append("bad_request")
    config = server_config(cohort, server, tmp_path, concurrency=1, max_error_fraction=1.0)
    run_annotation(config)
    assert len(plan_annotation(config).todo) == 1
    run_annotation(config)
    latest = AnnotationStore(config.store_path).latest()
    assert {record.status for record in latest.values()} == {"ok"}


def test_api_key_never_written(server, cohort, tmp_path, monkeypatch, caplog):
    fake_key = "sk-wgsy-FAKE-KEY-7d1e0c55a9"
    monkeypatch.setenv("WGSY_TEST_KEY", fake_key)
    server.script.extend(["rate_limit", "server_error", "bad_request"])
    server.settings.retry_after_s = 0.1
    config = server_config(cohort, server, tmp_path, key_env_var="WGSY_TEST_KEY", max_error_fraction=1.0)
    with caplog.at_level(logging.DEBUG):
        run_annotation(config)
    assert fake_key not in caplog.text
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert fake_key.encode() not in path.read_bytes(), f"{path} contains the API key"


def test_missing_key_message(cohort, tmp_path, monkeypatch):
    monkeypatch.delenv("WGSY_ABSENT_KEY", raising=False)
    config = AnnotateConfig(manifest=str(cohort), model="gpt-4o-mini", key_env_var="WGSY_ABSENT_KEY",
                            output_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="environment variable WGSY_ABSENT_KEY is not set"):
        run_annotation(config)


def test_key_as_parameter_rejected(cohort):
    with pytest.raises(ConfigError, match="looks like a secret"):
        AnnotateConfig.from_mapping({"manifest": str(cohort), "model": "m", "api_key": "sk-123"})


def test_empty_manifest_parameter_message():
    with pytest.raises(ConfigError, match="set manifest to the cohort manifest CSV"):
        AnnotateConfig.from_mapping({"model": "m"})


def test_base_url_without_scheme_message(cohort):
    with pytest.raises(ConfigError, match="base_url must start with http"):
        AnnotateConfig.from_mapping({"manifest": str(cohort), "model": "m", "base_url": "127.0.0.1:8000"})


def test_label_conditioned_needs_labels(server, tmp_path):
    manifest = make_cohort(tmp_path, 2)
    text = manifest.read_text().replace("Down syndrome,Down syndrome", "Unknown,Down syndrome")
    manifest.write_text(text)
    config = server_config(manifest, server, tmp_path, mode="label_conditioned")
    with pytest.raises(ConfigError, match="needs a diagnosis for every photo"):
        plan_annotation(config)


def test_rejected_key_stops_run(server, cohort, tmp_path):
    server.settings.default = "unauthorized"
    config = server_config(cohort, server, tmp_path, concurrency=1)
    with pytest.raises(AnnotationError, match="rejected the credentials"):
        run_annotation(config)
    assert len(server.chat_requests()) == 1


def test_unreadable_image_recorded_as_error(server, cohort, tmp_path):
    (tmp_path / "images" / "photo_001.jpg").write_bytes(b"not an image at all")
    config = server_config(cohort, server, tmp_path, max_error_fraction=0.5)
    run = run_annotation(config)
    assert run.counts == {"ok": 3, "error": 1}
    error = [record for record in _records(config) if record.status == "error"][0]
    assert "photo_001.jpg" in error.reason


def test_exif_rotated_photo_sent_upright(server, tmp_path):
    manifest = make_cohort(tmp_path, 1, size=(200, 100))
    path = tmp_path / "images" / "photo_000.jpg"
    image = Image.open(path)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(path, exif=exif)
    run_annotation(server_config(manifest, server, tmp_path))
    url = server.chat_requests()[0]["messages"][1]["content"][1]["image_url"]["url"]
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == (100, 200)
