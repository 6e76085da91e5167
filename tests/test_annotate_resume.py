"""A run killed at any moment loses at most the requests in flight: after a rerun every photo has
exactly one final record and every line of the store parses. Also the Batch API path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from annotate_helpers import make_cohort, server_config
from wgsy_lib.annotate import plan_annotation, run_annotation
from wgsy_lib.annotation_backends.batch import split_batch_lines
from wgsy_lib.annotation_store import AnnotationStore
from wgsy_lib.openai_mock import MockOpenAIServer
from wgsy_lib.paths import repo_root

_CHILD = """
import sys
from wgsy_lib.annotate import AnnotateConfig, run_annotation
run_annotation(AnnotateConfig(manifest=sys.argv[1], model="mock-vision", base_url=sys.argv[2],
                              output_dir=sys.argv[3], concurrency=4))
"""


def _wait_for_lines(path, count, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines")


def test_resume_after_kill(tmp_path):
    manifest = make_cohort(tmp_path, 30)
    with MockOpenAIServer(latency_s=0.1) as server:
        config = server_config(manifest, server, tmp_path)
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(manifest), server.base_url, config.output_dir],
                                 cwd=repo_root(), env=dict(os.environ, WGSY_ROOT=str(repo_root())),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_lines(config.store_path, 6)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)

        lines = config.store_path.read_bytes().split(b"\n")
        assert 6 <= len([line for line in lines if line]) < 30, "the kill came too late to test anything"
        for line in lines[:-1]:
            json.loads(line)

        run_annotation(config)

    records = AnnotationStore(config.store_path).read()
    keys = [record.key for record in records]
    assert len(keys) == len(set(keys)), "a photo was annotated twice"
    assert len(set(keys)) == 30, "a photo was lost"
    assert {record.status for record in records} == {"ok"}
    for line in config.store_path.read_text().splitlines():
        json.loads(line)


def test_partial_last_line_repaired_on_rerun(tmp_path):
    manifest = make_cohort(tmp_path, 3)
    with MockOpenAIServer() as server:
        config = server_config(manifest, server, tmp_path, limit=1)
        run_annotation(config)
        with open(config.store_path, "ab") as handle:
            handle.write(b'{"image_sha256": "abc", "ima')
        run_annotation(server_config(manifest, server, tmp_path))
    lines = config.store_path.read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        json.loads(line)


def test_batch_lines_split_by_count_and_size():
    lines = ["x" * 99] * 10
    assert [len(group) for group in split_batch_lines(lines, max_requests=4)] == [4, 4, 2]
    assert [len(group) for group in split_batch_lines(lines, max_bytes=350)] == [3, 3, 3, 1]


def test_batch_backend_end_to_end(tmp_path):
    manifest = make_cohort(tmp_path, 5)
    with MockOpenAIServer() as server:
        server.script.append("refusal")
        config = server_config(manifest, server, tmp_path, backend="batch", batch_poll_s=0.01)
        run = run_annotation(config)
        assert run.counts == {"ok": 4, "refused": 1}
        assert len(server.batches) == 1
        assert plan_annotation(config).todo == []
        # Batch answers share keys with real-time ones: the real-time backend has nothing left to do.
        assert plan_annotation(server_config(manifest, server, tmp_path)).todo == []
    records = AnnotationStore(config.store_path).read()
    assert {record.backend for record in records} == {"openai"}
    assert all("via Batch API" in (record.reason or "") for record in records if record.status == "ok")


def test_batch_resumed_without_resubmitting(tmp_path, monkeypatch):
    from wgsy_lib.annotation_backends import batch as batch_module

    manifest = make_cohort(tmp_path, 3)
    original_wait = batch_module._wait

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with MockOpenAIServer() as server:
        config = server_config(manifest, server, tmp_path, backend="batch", batch_poll_s=0.01)
        monkeypatch.setattr(batch_module, "_wait", interrupted)
        try:
            run_annotation(config)
        except KeyboardInterrupt:
            pass
        assert len(server.batches) == 1
        monkeypatch.setattr(batch_module, "_wait", original_wait)
        run = run_annotation(config)
        assert run.counts == {"ok": 3}
        assert len(server.batches) == 1, "the interrupted batch was submitted again"
