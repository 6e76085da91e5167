"""03_train's library: the answer-only collator, parameter checks, input checks and adapter contents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from wgsy_lib.collate import END_OF_TURN, IGNORE_INDEX, AnswerOnlyCollator
from wgsy_lib.errors import ConfigError, DataError, ModelError
from wgsy_lib.models import load_processor
from wgsy_lib.training import TrainConfig, prepare_run, read_jsonl_split

ANSWERS = ['{"diagnosis": "Down syndrome"}', '{"diagnosis": "Williams syndrome", "explanation": "a longer answer"}']


def _example(answer: str, image, *, system: bool = False) -> dict:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which syndrome?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    if system:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": "You are a geneticist."}]})
    return {"messages": messages, "images": [image]}


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir)


@pytest.fixture(scope="module")
def batch(processor):
    images = [Image.new("RGB", (80, 60), (200, 40, 40)), Image.new("RGB", (50, 90), (40, 40, 200))]
    examples = [_example(ANSWERS[0], images[0], system=True), _example(ANSWERS[1], images[1])]
    return AnswerOnlyCollator(processor)(examples)


def test_batch_token_type_ids_match_input_ids(batch):
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    assert batch["labels"].shape == batch["input_ids"].shape


def test_batch_labels_only_on_answers(batch, processor):
    for row, answer in enumerate(ANSWERS):
        labelled = batch["input_ids"][row][batch["labels"][row] != IGNORE_INDEX]
        assert processor.tokenizer.decode(labelled) == answer + END_OF_TURN


def test_batch_no_label_on_padding(batch):
    padding = batch["attention_mask"] == 0
    assert padding.any(), "the two answers differ in length, so one row must be padded"
    assert (batch["labels"][padding] == IGNORE_INDEX).all()


def test_batch_no_label_on_image_tokens(batch, processor):
    tokenizer = processor.tokenizer
    image_positions = batch["token_type_ids"] != 0
    assert image_positions.any()
    assert (batch["labels"][image_positions] == IGNORE_INDEX).all()
    for token_id in (tokenizer.image_token_id, tokenizer.boi_token_id, tokenizer.eoi_token_id):
        assert (batch["labels"][batch["input_ids"] == token_id] == IGNORE_INDEX).all()


def test_batch_end_of_turn_labelled(batch, processor):
    end_of_turn = processor.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    for row in range(batch["labels"].shape[0]):
        assert (batch["labels"][row] == end_of_turn).sum() == 1


def test_batch_images_never_truncated(batch, processor):
    image_tokens = (batch["input_ids"] == processor.tokenizer.image_token_id).sum(dim=1)
    assert image_tokens.tolist() == [processor.image_seq_length] * 2


def test_collator_loads_image_paths(processor, tmp_path):
    path = tmp_path / "face.png"
    Image.new("RGBA", (40, 40), (0, 200, 0, 128)).save(path)
    batch = AnswerOnlyCollator(processor)([_example(ANSWERS[0], str(path))])
    assert batch["pixel_values"].shape[0] == 1


@pytest.mark.parametrize("value, expected", [(0, "positive integer"), (-4, "positive integer")])
def test_config_rejects_bad_rank(value, expected):
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_mapping(_required(r=value))
    assert "r = " in str(error.value)
    assert expected in str(error.value)


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5])
def test_config_rejects_dropout_outside_range(value):
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_mapping(_required(lora_dropout=value))
    assert f"lora_dropout = {value!r}" in str(error.value)
    assert "[0, 1)" in str(error.value)


def test_config_requires_paths():
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_mapping({})
    for name in ("model_name_or_path", "data_dir", "output_dir"):
        assert f"{name} is required" in str(error.value)


def test_config_reads_learning_rate_string():
    # YAML 1.1 reads 2e-4 (no dot) as a string; pydantic's lax mode turns it into a float.
    assert TrainConfig.from_mapping(_required(learning_rate="2e-4")).learning_rate == pytest.approx(2e-4)


def test_config_parses_papermill_list_string():
    config = TrainConfig.from_mapping(_required(target_modules="[q_proj, v_proj]"))
    assert config.target_modules == ["q_proj", "v_proj"]


def _required(**values) -> dict:
    return {"model_name_or_path": "m", "data_dir": "d", "output_dir": "o", **values}


def _write_split(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _row(image: str, label: str = "Down syndrome") -> dict:
    example = _example('{"diagnosis": "%s"}' % label, image)
    return {**example, "image": image, "label": label, "answer_format": "json", "subject_id": "s1", "split": "train"}


def test_empty_train_split_rejected(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_jsonl_split(path, "train")
    assert str(path) in str(error.value)
    assert "has no examples" in str(error.value)


def test_missing_photos_rejected(tmp_path):
    present = tmp_path / "present.png"
    Image.new("RGB", (8, 8)).save(present)
    path = tmp_path / "train.jsonl"
    _write_split(path, [_row(str(present)), _row(str(tmp_path / "gone.png")), _row(str(tmp_path / "lost.png"))])
    with pytest.raises(DataError) as error:
        read_jsonl_split(path, "train")
    message = str(error.value)
    assert "2 photo(s) not found" in message
    assert "line 2:" in message
    assert "gone.png" in message


def test_row_without_answer_rejected(tmp_path):
    path = tmp_path / "train.jsonl"
    row = _row("x.png")
    row["messages"] = row["messages"][:1]
    _write_split(path, [row])
    with pytest.raises(DataError, match="line 1: 'messages' must be a list of turns ending with the assistant"):
        read_jsonl_split(path, "train")


def _data_dir(tmp_path: Path) -> Path:
    image = tmp_path / "face.png"
    Image.new("RGB", (32, 32)).save(image)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val"):
        _write_split(data / f"{split}.jsonl", [_row(str(image))])
    return data


def test_missing_model_path_fails_before_loading(tmp_path):
    config = TrainConfig.from_mapping({"model_name_or_path": str(tmp_path / "nowhere"),
                                       "data_dir": str(_data_dir(tmp_path)), "output_dir": str(tmp_path / "run")})
    with pytest.raises(ModelError, match="does not exist"):
        prepare_run(config)
    assert not (tmp_path / "run" / "run_card.json").exists()


def test_unknown_target_module_rejected(tiny_model_dir, tmp_path):
    from wgsy_lib.training import load_model_for_training

    config = TrainConfig.from_mapping({"model_name_or_path": str(tiny_model_dir), "data_dir": str(_data_dir(tmp_path)),
                                       "output_dir": str(tmp_path / "run"), "target_modules": ["q_proj", "qkv_proj"]})
    plan = prepare_run(config)
    with pytest.raises(ConfigError) as error:
        load_model_for_training(plan)
    assert "unknown module name(s) ['qkv_proj']" in str(error.value)
    assert "'o_proj'" in str(error.value)


def test_lora_stays_in_language_model(tiny_model_dir, tmp_path):
    from wgsy_lib.training import load_model_for_training

    config = TrainConfig.from_mapping({"model_name_or_path": str(tiny_model_dir), "data_dir": str(_data_dir(tmp_path)),
                                       "output_dir": str(tmp_path / "run")})
    model, _ = load_model_for_training(prepare_run(config))
    lora_names = [name for name, _ in model.named_parameters() if "lora_A" in name]
    assert lora_names
    assert all("language_model" in name for name in lora_names)
    assert not any("vision_tower" in name or "embed_tokens" in name for name in lora_names)


@pytest.mark.parametrize("save_embedding_layers", [False, True])
def test_adapter_size_with_and_without_embeddings(tiny_model_dir, tmp_path, save_embedding_layers, record_property):
    from safetensors import safe_open

    from wgsy_lib.training import load_model_for_training, save_adapter

    config = TrainConfig.from_mapping({"model_name_or_path": str(tiny_model_dir), "data_dir": str(_data_dir(tmp_path)),
                                       "output_dir": str(tmp_path / "run"), "r": 16,
                                       "save_embedding_layers": save_embedding_layers})
    plan = prepare_run(config)
    model, processor = load_model_for_training(plan)
    adapter = save_adapter(plan, model, processor)

    weights = adapter / "adapter_model.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        embedding_keys = [key for key in handle.keys() if "embed_tokens" in key or "lm_head" in key]
    record_property("adapter_bytes", weights.stat().st_size)
    if save_embedding_layers:
        assert embedding_keys
    else:
        assert embedding_keys == []
    saved_config = json.loads((adapter / "config.json").read_text())
    assert saved_config["text_config"]["use_cache"] is True
    assert (adapter / "tokenizer.json").is_file()
    assert (adapter / "processor_config.json").is_file()


def test_trainer_keeps_image_column(tiny_model_dir, tmp_path):
    from wgsy_lib.training import build_trainer, load_model_for_training

    config = TrainConfig.from_mapping({"model_name_or_path": str(tiny_model_dir), "data_dir": str(_data_dir(tmp_path)),
                                       "output_dir": str(tmp_path / "run"), "max_steps": 1})
    plan = prepare_run(config)
    model, processor = load_model_for_training(plan)
    trainer = build_trainer(plan, model, processor)
    assert trainer.args.remove_unused_columns is False
    assert trainer.args.max_length is None
    batch = next(iter(trainer.get_train_dataloader()))
    assert "pixel_values" in batch
    assert (batch["labels"] != IGNORE_INDEX).any()
