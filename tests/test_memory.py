"""Memory estimate from a config alone: MedGemma 4B counts, the fit check and its advice, offload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wgsy_lib.errors import ConfigError, ModelError
from wgsy_lib.memory import (
    GIB,
    check_fits,
    check_memory_before_loading,
    estimate_memory,
    lora_pattern,
    offload_loading_kwargs,
)

MEDGEMMA_4B_CONFIG = Path(__file__).parent / "fixtures" / "medgemma_4b_config.json"
# Google's model card gives MedGemma 4B (and Gemma 3 4B) as about 4.3 B parameters.
MEDGEMMA_4B_PARAMETERS = 4.3e9


@pytest.fixture(scope="module")
def medgemma_bf16():
    return estimate_memory(MEDGEMMA_4B_CONFIG, dtype="bf16", lora_r=16, target_modules="all-linear",
                           batch_size=1, seq_len=256, gradient_checkpointing=True)


def test_medgemma_parameter_count_near_4_3b(medgemma_bf16):
    assert medgemma_bf16.counts.total == pytest.approx(MEDGEMMA_4B_PARAMETERS, rel=0.03)


def test_medgemma_groups_add_up(medgemma_bf16):
    counts = medgemma_bf16.counts
    assert counts.vision + counts.projector + counts.language == counts.total
    assert 0.40e9 < counts.vision < 0.43e9  # SigLIP-So400m at 896 px, without its pooling head
    assert counts.projector < 5e6


def test_medgemma_bf16_weights_two_bytes_each(medgemma_bf16):
    assert medgemma_bf16.weight_bytes == medgemma_bf16.counts.total * 2


def test_4bit_weights_smaller_than_half(medgemma_bf16):
    quantized = medgemma_bf16.with_settings(quantization="4bit")
    assert quantized.weight_bytes < medgemma_bf16.weight_bytes / 2
    # Embedding and norms stay in bf16, so 4-bit cannot reach a quarter of the bf16 size.
    assert quantized.weight_bytes > medgemma_bf16.weight_bytes / 4


def test_lora_count_follows_target_modules():
    common = dict(dtype="bf16", lora_r=16, batch_size=1, seq_len=64)
    everything = estimate_memory(MEDGEMMA_4B_CONFIG, target_modules="all-linear", **common).counts
    language_only = estimate_memory(
        MEDGEMMA_4B_CONFIG, target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        **common).counts
    assert everything.lora_vision > 0
    assert language_only.lora_vision == 0
    assert language_only.lora == everything.lora_language


def test_lora_state_counts_adam(medgemma_bf16):
    # fp32 weight + fp32 gradient + two fp32 AdamW moments = 16 bytes per trainable parameter.
    assert medgemma_bf16.lora_bytes == medgemma_bf16.counts.lora * 16


def test_activations_grow_with_batch(medgemma_bf16):
    larger = medgemma_bf16.with_settings(batch_size=4)
    assert larger.activation_bytes == pytest.approx(4 * medgemma_bf16.activation_bytes, rel=0.01)


def test_checkpointing_lowers_activations(medgemma_bf16):
    without = medgemma_bf16.with_settings(gradient_checkpointing=False)
    assert without.activation_bytes > 3 * medgemma_bf16.activation_bytes


def test_estimate_from_dict_and_folder(tmp_path):
    values = json.loads(MEDGEMMA_4B_CONFIG.read_text())
    (tmp_path / "config.json").write_text(json.dumps(values))
    from_dict = estimate_memory(values, lora_r=0)
    from_folder = estimate_memory(tmp_path, lora_r=0)
    assert from_dict.counts == from_folder.counts
    assert from_dict.counts.lora == 0


def test_tiny_model_estimate_matches_loaded(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    estimate = estimate_memory(tiny_model_dir, dtype="fp32", lora_r=4, batch_size=2, seq_len=32)
    assert estimate.counts.total == sum(parameter.numel() for parameter in model.parameters())
    assert estimate.weight_bytes == estimate.counts.total * 4


def test_fits_on_large_device(medgemma_bf16):
    check_fits(medgemma_bf16, 80 * GIB)


def test_too_large_names_changes(medgemma_bf16):
    large = medgemma_bf16.with_settings(batch_size=8)
    with pytest.raises(ModelError) as raised:
        check_fits(large, 16 * GIB)
    message = str(raised.value)
    assert "16.00 GiB free" in message
    assert "batch_size 1" in message
    assert "quantization '4bit'" in message
    assert "offload_folder" in message


def test_checkpointing_suggested_when_off(medgemma_bf16):
    with pytest.raises(ModelError, match="gradient_checkpointing True"):
        check_fits(medgemma_bf16.with_settings(gradient_checkpointing=False), 16 * GIB)


def test_offload_lets_weights_spill(medgemma_bf16):
    device = 6 * GIB  # smaller than the 8 GiB of bf16 weights, larger than LoRA state plus activations
    with pytest.raises(ModelError):
        check_fits(medgemma_bf16, device)
    check_fits(medgemma_bf16, device, offload_folder="outputs/offload")


def test_check_before_loading_stops_early(tmp_path, monkeypatch):
    import wgsy_lib.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda device=None: 4 * GIB)
    with pytest.raises(ModelError, match="this run needs about"):
        check_memory_before_loading(MEDGEMMA_4B_CONFIG, device="cpu", dtype="bf16", batch_size=2)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"dtype": "int8"}, "dtype is 'int8'; expected one of bf16, fp16, fp32"),
        ({"quantization": "8bit"}, "quantization is '8bit'; expected None or '4bit'"),
        ({"batch_size": 0}, "batch_size is 0; expected a whole number of at least 1"),
        ({"target_modules": ["no_such_layer"]}, "target_modules \\['no_such_layer'\\] matches no layer"),
    ],
)
def test_bad_settings_rejected(arguments, message):
    with pytest.raises(ConfigError, match=message):
        estimate_memory(MEDGEMMA_4B_CONFIG, **arguments)


def test_missing_config_rejected(tmp_path):
    with pytest.raises(ConfigError, match="absent not found; pass a model folder containing config.json"):
        estimate_memory(tmp_path / "absent")


def test_offload_unused_on_cpu(caplog):
    with caplog.at_level("INFO", logger="wgsy_lib.memory"):
        assert offload_loading_kwargs("outputs/offload", "cpu") == {}
    assert "nothing to offload" in caplog.text


def test_offload_kwargs_on_cuda(tmp_path):
    kwargs = offload_loading_kwargs(tmp_path / "offload", "cuda")
    assert kwargs == {"device_map": "auto", "offload_folder": str(tmp_path / "offload")}


def test_lora_pattern_scopes_by_tower():
    language_only = estimate_memory(MEDGEMMA_4B_CONFIG, target_modules=lora_pattern(["q_proj", "v_proj"]), lora_r=8).counts
    both = estimate_memory(MEDGEMMA_4B_CONFIG, target_modules=lora_pattern(["q_proj", "v_proj"], ["q_proj"]), lora_r=8).counts
    assert language_only.lora_vision == 0
    assert language_only.lora_language > 0
    assert both.lora_vision > 0
    assert both.lora_language == language_only.lora_language


def test_lora_pattern_empty_rejected():
    with pytest.raises(ConfigError, match="target_modules is empty"):
        lora_pattern([])


def test_rank_change_matches_fresh_estimate(medgemma_bf16):
    fresh = estimate_memory(MEDGEMMA_4B_CONFIG, dtype="bf16", lora_r=8, target_modules="all-linear",
                            batch_size=1, seq_len=256, gradient_checkpointing=True)
    assert medgemma_bf16.with_settings(lora_r=8).counts == fresh.counts


def test_train_stage_stops_before_loading(tiny_model_dir, tmp_path, monkeypatch):
    import wgsy_lib.memory as memory
    from test_training import _data_dir
    from wgsy_lib.training import TrainConfig, prepare_run

    monkeypatch.setattr(memory, "available_memory", lambda device=None: 1024)
    config = TrainConfig.from_mapping({"model_name_or_path": str(tiny_model_dir), "data_dir": str(_data_dir(tmp_path)),
                                       "output_dir": str(tmp_path / "run")})
    with pytest.raises(ModelError, match="this run needs about"):
        prepare_run(config)
    assert not (tmp_path / "run" / "run_card.json").exists()
