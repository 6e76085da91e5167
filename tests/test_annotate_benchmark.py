"""Benchmark: 01_annotate at concurrency 16 against a one-request-at-a-time loop, 100 photos, a
local mock server adding 200 ms per request. Run with `pytest -m benchmark -s`; the result also
goes to outputs/benchmarks/annotate.json."""

from __future__ import annotations

import json
import platform
import time

import pytest

from annotate_helpers import make_cohort, server_config
from wgsy_lib.annotate import annotate_item, make_openai_backend, plan_annotation, run_annotation
from wgsy_lib.annotation_store import AnnotationStore
from wgsy_lib.openai_mock import MockOpenAIServer
from wgsy_lib.paths import outputs_dir

PHOTOS = 100
LATENCY_S = 0.2
CONCURRENCY = 16
REQUIRED_SPEEDUP = 8.0


@pytest.mark.benchmark
def test_concurrency_speedup(tmp_path):
    manifest = make_cohort(tmp_path, PHOTOS)
    with MockOpenAIServer(latency_s=LATENCY_S) as server:
        sequential_config = server_config(manifest, server, tmp_path / "sequential", concurrency=1)
        plan = plan_annotation(sequential_config)
        backend = make_openai_backend(sequential_config, plan.features)
        started = time.perf_counter()
        for item in plan.todo:
            annotate_item(item, backend, sequential_config, plan)
        sequential_s = time.perf_counter() - started

        concurrent_config = server_config(manifest, server, tmp_path / "concurrent", concurrency=CONCURRENCY)
        concurrent_plan = plan_annotation(concurrent_config)
        started = time.perf_counter()
        run = run_annotation(concurrent_config, concurrent_plan)
        concurrent_s = time.perf_counter() - started

    assert run.counts == {"ok": PHOTOS}
    assert len(AnnotationStore(sequential_config.store_path).read()) == PHOTOS
    speedup = sequential_s / concurrent_s
    result = {"benchmark": "01_annotate concurrency", "photos": PHOTOS, "latency_s": LATENCY_S,
              "concurrency": CONCURRENCY, "sequential_s": round(sequential_s, 2), "concurrent_s": round(concurrent_s, 2),
              "speedup": round(speedup, 2), "machine": f"{platform.machine()}, {platform.python_version()}",
              "command": "pytest -m benchmark -s tests/test_annotate_benchmark.py"}
    path = outputs_dir() / "benchmarks" / "annotate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\n01_annotate: sequential {sequential_s:.2f} s, concurrency {CONCURRENCY} {concurrent_s:.2f} s, "
          f"speedup {speedup:.1f}x (written to {path})")
    assert speedup >= REQUIRED_SPEEDUP
