"""Model loading: device and dtype choices, hardware checks, paths, processor padding and adapter keys."""

from __future__ import annotations

import pytest
import torch

from wgsy_lib.errors import ConfigError, ModelError
from wgsy_lib.models import (choose_attention, choose_device, choose_dtype, load_adapter, load_base_model,
                             load_processor, locate_model, quantization_config)


def test_dtype_auto_on_cpu_is_fp32():
    assert choose_dtype("cpu", "auto", model_type="gemma3") == torch.float32


def test_dtype_fp16_rejected_for_gemma3():
    with pytest.raises(ConfigError) as error:
        choose_dtype("cuda", "fp16", model_type="gemma3")
    message = str(error.value)
    assert "fp16" in message
    assert "range" in message
    assert "bf16" in message


def test_dtype_invalid_name():
    with pytest.raises(ConfigError, match="dtype 'float8' is invalid"):
        choose_dtype("cpu", "float8")


def test_attention_eager_for_gemma3_training():
    assert choose_attention("auto", model_type="gemma3", training=True) == "eager"
    assert choose_attention("auto", model_type="gemma3", training=False) == "sdpa"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_gpu():
    with pytest.raises(ModelError, match="no CUDA GPU"):
        choose_device("cuda")


def test_qlora_rejected_off_cuda():
    with pytest.raises(ModelError) as error:
        quantization_config(True, device="cpu", compute_dtype=torch.float32)
    assert "CUDA" in str(error.value)
    assert "load_in_4bit: false" in str(error.value)


def test_qlora_off_returns_none():
    assert quantization_config(False, device="cpu", compute_dtype=torch.float32) is None


def test_missing_model_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError) as error:
        locate_model(str(missing))
    assert str(missing) in str(error.value)
    assert "does not exist" in str(error.value)


def test_model_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        locate_model(str(tmp_path))


def test_empty_model_path():
    with pytest.raises(ConfigError, match="model_name_or_path is empty"):
        locate_model("")


def test_locate_tiny_model_reads_type(tiny_model_dir):
    source = locate_model(str(tiny_model_dir))
    assert source.model_type == "gemma3"
    assert source.is_gemma3


@pytest.mark.parametrize("side", ["left", "right"])
def test_processor_padding_side_reaches_tokenizer(tiny_model_dir, side):
    processor = load_processor(tiny_model_dir, padding_side=side)
    assert processor.tokenizer.padding_side == side


def _tiny_peft(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    source = locate_model(str(tiny_model_dir))
    model = load_base_model(source, device="cpu", dtype=torch.float32, attn_implementation="eager")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(?:q_proj|v_proj)")
    peft_model = get_peft_model(model, config)
    # LoRA B starts at zero; give it values so a load that silently fails is visible.
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter)
    return source, peft_model


def _fresh_base(source):
    return load_base_model(source, device="cpu", dtype=torch.float32, attn_implementation="eager")


def test_adapter_loads_and_matches(tiny_model_dir, tmp_path):
    source, peft_model = _tiny_peft(tiny_model_dir)
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = load_adapter(_fresh_base(source), tmp_path / "adapter")
    assert any("lora_B" in name for name, _ in loaded.named_parameters())


def test_adapter_with_foreign_keys_rejected(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    source, peft_model = _tiny_peft(tiny_model_dir)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    weights = load_file(adapter / "adapter_model.safetensors")
    renamed = {key.replace("language_model", "text_model"): value for key, value in weights.items()}
    save_file(renamed, adapter / "adapter_model.safetensors")

    with pytest.raises(ModelError) as error:
        load_adapter(_fresh_base(source), adapter)
    assert "does not match the base model" in str(error.value)
    assert "no place in the model" in str(error.value)


def test_adapter_folder_without_weights(tiny_model_dir, tmp_path):
    source = locate_model(str(tiny_model_dir))
    with pytest.raises(ModelError, match="has no adapter_model.safetensors"):
        load_adapter(_fresh_base(source), tmp_path)
