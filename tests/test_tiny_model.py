"""The tiny model stands in for MedGemma: same classes, tokens, turn structure and loading path."""

import pytest
import torch
from PIL import Image

from wgsy_lib.errors import ConfigError, ModelError
from wgsy_lib.tiny_model import (END_OF_TURN, SPECIAL_TOKENS, build_tiny_model, load_tiny_model, settings_for,
                                 tiny_model_path)

MESSAGES = [
    {"role": "system", "content": [{"type": "text", "text": "You are a clinical geneticist."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which syndrome does this face show?"}]},
]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    model, processor = load_tiny_model(tiny_model_dir)
    model.eval()
    return model, processor


def _batch(processor, images):
    prompt = processor.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    return processor(text=[prompt] * len(images), images=[[image] for image in images], return_tensors="pt",
                     padding=True)


def test_loads_as_gemma3_through_auto_classes(loaded, tiny_model_dir):
    model, processor = loaded
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert type(processor).__name__ == "Gemma3Processor"
    size = sum(path.stat().st_size for path in tiny_model_dir.iterdir())
    assert size < 5_000_000


def test_images_change_the_logits(loaded):
    model, processor = loaded
    batch = _batch(processor, [Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "blue")])
    with torch.no_grad():
        logits = model(**batch).logits[:, -1]
    assert (logits[0] - logits[1]).abs().max() > 1e-3


def test_batch_of_two_image_sizes_generates_and_stops_on_end_of_turn(loaded):
    model, processor = loaded
    batch = _batch(processor, [Image.new("RGB", (120, 80), "white"), Image.new("RGB", (40, 200), "gray")])
    assert set(batch) >= {"input_ids", "attention_mask", "pixel_values", "token_type_ids"}
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    output = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert output.shape[0] == 2
    assert output.shape[1] <= batch["input_ids"].shape[1] + 4
    end_of_turn = processor.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    assert end_of_turn in model.generation_config.eos_token_id
    assert processor.tokenizer.padding_side == "left"


def test_special_tokens_round_trip_as_single_tokens(loaded):
    tokenizer = loaded[1].tokenizer
    for token in SPECIAL_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
        assert tokenizer.convert_ids_to_tokens(ids) == [token]
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert (tokenizer.boi_token, tokenizer.eoi_token, tokenizer.image_token) == (
        "<start_of_image>", "<end_of_image>", "<image_soft_token>")


def test_any_text_tokenizes_and_decodes_through_byte_fallback(loaded):
    tokenizer = loaded[1].tokenizer
    text = 'Williams syndrome 威廉姆斯综合征 {"diagnosis": "Down syndrome"} é ✓'
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_chat_template_has_medgemma_turns_with_system_folded_into_user(loaded):
    processor = loaded[1]
    messages = MESSAGES + [{"role": "assistant", "content": [{"type": "text", "text": "Down syndrome"}]}]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text == ("<bos><start_of_turn>user\nYou are a clinical geneticist.\n\n<start_of_image>"
                    "Which syndrome does this face show?<end_of_turn>\n<start_of_turn>model\nDown syndrome<end_of_turn>\n")


def test_build_is_deterministic(tmp_path):
    first = build_tiny_model(tmp_path / "a")
    second = build_tiny_model(tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_cache_reuses_the_built_model(tmp_path):
    first = tiny_model_path(root=tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_path(root=tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert tiny_model_path(root=tmp_path, seed=1) != first


def test_medgemma_geometry_has_896_pixels_and_256_image_tokens(tmp_path):
    path = build_tiny_model(tmp_path / "m", geometry="medgemma")
    model, processor = load_tiny_model(path)
    assert processor.image_seq_length == 256
    assert model.config.mm_tokens_per_image == 256
    batch = _batch(processor, [Image.new("RGB", (300, 200), "white")])
    assert tuple(batch["pixel_values"].shape[-2:]) == (896, 896)
    assert int((batch["input_ids"] == processor.tokenizer.image_token_id).sum()) == 256


def test_existing_folder_is_not_overwritten_silently(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ModelError, match="already exists and is not empty.*overwrite"):
        build_tiny_model(tmp_path)


def test_bad_settings_are_rejected_with_the_values():
    with pytest.raises(ConfigError, match="geometry 'huge' is invalid"):
        settings_for("huge")
    with pytest.raises(ConfigError, match="image_tokens 15"):
        settings_for(image_tokens=15)
    with pytest.raises(ConfigError, match=r"unknown tiny model setting\(s\) \['colour'\]"):
        settings_for(colour="red")
