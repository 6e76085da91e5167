"""Evaluation speed on the tiny model and the CPU: one-at-a-time generation vs batched vs label scoring.

Run with `pytest -m benchmark -s tests/test_evaluate_benchmark.py`. All three methods run on the
same 64 photos in one process, so the ratios compare like with like. Absolute images per second
depend on the machine, so they are recorded and never asserted. Results go to outputs/benchmarks/evaluate.json.

The one-at-a-time loop is what the earlier training script did: one prompt, one `generate` call,
one decode per photo. The untrained tiny model never emits <end_of_turn>, so every generation runs
to max_new_tokens; a trained model that stops early makes both generation modes faster.
"""

from __future__ import annotations

import json
import logging
import platform
import time

import pytest
import torch

from eval_helpers import make_photos, write_eval_jsonl
from wgsy_lib.inference import generate_answers, read_eval_file, score_labels
from wgsy_lib.log import log_written
from wgsy_lib.paths import outputs_dir

N_EXAMPLES = 64
BATCH_SIZE = 16
# Short for a JSON answer with features (those run to 100+ tokens), so the generation timings are
# on the fast side and the scoring ratio is an underestimate.
MAX_NEW_TOKENS = 48
TARGET_SCORING_RATIO = 5.0

logger = logging.getLogger(__name__)


def _timed(run):
    started = time.perf_counter()
    outcome = run()
    seconds = time.perf_counter() - started
    assert not outcome.errors
    return seconds, outcome


@pytest.mark.benchmark
def test_evaluation_speed(tmp_path, tiny_model_dir, labels):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    photos = make_photos(tmp_path / "photos", N_EXAMPLES)
    examples = read_eval_file(write_eval_jsonl(tmp_path / "test.jsonl", photos, labels), labels)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    # Warm-up, so the first method does not pay for lazy initialisation.
    score_labels(model, processor, examples[:2], labels, batch_size=2)
    generate_answers(model, processor, examples[:2], batch_size=2, max_new_tokens=2)

    loop_s, loop = _timed(lambda: generate_answers(model, processor, examples, batch_size=1, max_new_tokens=MAX_NEW_TOKENS))
    batched_s, batched = _timed(lambda: generate_answers(model, processor, examples, batch_size=BATCH_SIZE,
                                                         max_new_tokens=MAX_NEW_TOKENS))
    scoring_s, _scored = _timed(lambda: score_labels(model, processor, examples, labels, batch_size=BATCH_SIZE))

    result = {
        "examples": N_EXAMPLES, "batch_size": BATCH_SIZE, "max_new_tokens": MAX_NEW_TOKENS,
        "images_per_second": {"one_at_a_time_generation": N_EXAMPLES / loop_s,
                              "batched_generation": N_EXAMPLES / batched_s, "label_scoring": N_EXAMPLES / scoring_s},
        "ratio_vs_one_at_a_time": {"batched_generation": loop_s / batched_s, "label_scoring": loop_s / scoring_s},
        "generations_identical": [item.text for item in loop.results] == [item.text for item in batched.results],
        "target_label_scoring_ratio": TARGET_SCORING_RATIO,
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__},
    }
    path = outputs_dir() / "benchmarks" / "evaluate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    log_written(path, "evaluation benchmark", log=logger)
    print(json.dumps(result, indent=2))

    assert result["generations_identical"]
    assert result["ratio_vs_one_at_a_time"]["label_scoring"] >= TARGET_SCORING_RATIO
