"""Batched generation and label scoring on the tiny model: batch sizes agree, failures are contained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eval_helpers import make_photos, write_eval_jsonl
from wgsy_lib.errors import DataError, ModelError
from wgsy_lib.inference import (encode_prompts, generate_answers, prompt_messages, read_eval_file,
                                run_in_batches, score_labels, stop_token_ids)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    # Start from right padding, as training leaves it: inference must switch the tokenizer itself.
    processor.tokenizer.padding_side = "right"
    return model, processor


@pytest.fixture
def examples(tmp_path, labels):
    photos = make_photos(tmp_path / "photos", 6)
    path = write_eval_jsonl(tmp_path / "test.jsonl", photos, labels, system="You are a clinical geneticist.")
    return read_eval_file(path, labels)


def test_scoring_agrees_across_batch_sizes(tiny, examples, labels):
    model, processor = tiny
    one = score_labels(model, processor, examples, labels, batch_size=1)
    many = score_labels(model, processor, examples, labels, batch_size=4)
    first = np.array([item.probabilities for item in one.results])
    second = np.array([item.probabilities for item in many.results])
    assert first.shape == (6, 4)
    np.testing.assert_allclose(first, second, atol=1e-4)
    np.testing.assert_allclose(first.sum(axis=1), 1.0, atol=1e-6)


def test_generation_agrees_across_batch_sizes(tiny, examples):
    model, processor = tiny
    one = generate_answers(model, processor, examples, batch_size=1, max_new_tokens=12)
    many = generate_answers(model, processor, examples, batch_size=6, max_new_tokens=12)
    assert [item.text for item in one.results] == [item.text for item in many.results]
    assert processor.tokenizer.padding_side == "left"


def test_generation_decodes_only_new_tokens(tiny, examples):
    model, processor = tiny
    run = generate_answers(model, processor, examples[:2], batch_size=2, max_new_tokens=8)
    for item in run.results:
        assert "Which genetic syndrome" not in item.text
        assert item.n_new_tokens <= 8


def test_prompt_excludes_the_answer(tiny, examples):
    _model, processor = tiny
    text = processor.apply_chat_template(examples[0].prompt_messages, add_generation_prompt=True, tokenize=False)
    assert "diagnosis" not in text
    assert text.rstrip().endswith("model")
    encoded = encode_prompts(processor, examples[:1], [__import__("PIL.Image").Image.new("RGB", (32, 32))])
    bos = processor.tokenizer.bos_token_id
    assert encoded["input_ids"][0].tolist().count(bos) == 1


def test_stop_tokens_include_end_of_turn(tiny):
    _model, processor = tiny
    stops = stop_token_ids(processor.tokenizer)
    assert processor.tokenizer.convert_tokens_to_ids("<end_of_turn>") in stops
    assert processor.tokenizer.eos_token_id in stops


def test_bad_photo_is_skipped_without_sinking_batch(tiny, examples, tmp_path, labels):
    model, processor = tiny
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    bad = examples[1].__class__(**{**examples[1].__dict__, "image": str(broken)})
    batch = [examples[0], bad, examples[2]]
    run = score_labels(model, processor, batch, labels, batch_size=3)
    assert [item.example.line for item in run.results] == [examples[0].line, examples[2].line]
    assert len(run.errors) == 1
    assert "broken.jpg" in run.errors[0].message


def test_out_of_memory_halves_batch(examples):
    calls = []

    def run_batch(batch, images):
        calls.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return [example.line for example in batch]

    outcome = run_in_batches(examples, 8, run_batch, desc="test", stage="score")
    assert outcome.results == [example.line for example in examples]
    assert calls == [6, 3, 1, 1, 1, 1, 1, 1]
    assert outcome.batch_size_used == 1


def test_out_of_memory_at_batch_one(examples):
    def run_batch(batch, images):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(ModelError, match="batch size 1"):
        run_in_batches(examples[:1], 1, run_batch, desc="test", stage="score")


def test_prompt_messages_drop_assistant_turn():
    messages = [{"role": "system", "content": []}, {"role": "user", "content": []},
                {"role": "assistant", "content": [{"type": "text", "text": "ANSWER"}]}]
    assert [message["role"] for message in prompt_messages(messages)] == ["system", "user"]


def test_read_eval_file_names_bad_line(tmp_path, labels):
    photos = make_photos(tmp_path, 2)
    path = write_eval_jsonl(tmp_path / "val.jsonl", photos, labels)
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["label"] = "Noonan syndrome"
    path.write_text(lines[0] + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=r"val.jsonl, line 2: label 'Noonan syndrome'"):
        read_eval_file(path, labels)


def test_read_eval_file_requires_subject(tmp_path, labels):
    photos = make_photos(tmp_path, 1)
    path = write_eval_jsonl(tmp_path / "test.jsonl", photos, labels)
    record = json.loads(path.read_text())
    del record["subject_id"]
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match="subject_id"):
        read_eval_file(path, labels)


def test_binary_format_scores_two_classes(tiny, tmp_path, labels):
    model, processor = tiny
    photos = make_photos(tmp_path / "photos", 3)
    examples = read_eval_file(write_eval_jsonl(tmp_path / "binary.jsonl", photos, labels, answer_format="binary"), labels)
    run = score_labels(model, processor, examples, labels, batch_size=3)
    assert run.results[0].classes == ["Williams syndrome", "healthy control"]
    assert len(run.results[0].probabilities) == 2
