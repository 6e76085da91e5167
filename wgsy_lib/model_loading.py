"""Loading the base model and swapping adapters for evaluation, on top of wgsy_lib.models.

Evaluation loads the base model once and attaches each adapter in turn, then removes it again, so a
grid of N cells costs one model load rather than N. An adapter whose weights do not match the
model is a ModelError: PEFT only warns, and the model would then behave like the base model.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from .errors import ModelError
from .paths import resolve_path

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def load_for_evaluation(base_model: str, *, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """Load the base model in eval mode and its processor (padding on the left); return both."""
    if _has_models_module():
        from . import models

        source = models.locate_model(base_model)
        chosen_device = models.choose_device(device)
        chosen_dtype = models.choose_dtype(chosen_device, dtype, model_type=source.model_type)
        attention = models.choose_attention("auto", model_type=source.model_type, training=False)
        model = models.load_base_model(source, device=chosen_device, dtype=chosen_dtype, attn_implementation=attention)
        processor = models.load_processor(source.local_dir or source.name, padding_side="left")
    else:
        model, processor = _load_without_models_module(base_model, device=device, dtype=dtype)

    model.eval()
    # Training may leave use_cache=False in the saved config (needed for gradient checkpointing);
    # generation without the cache recomputes the whole prefix at every step.
    model.config.use_cache = True
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.use_cache = True
    return model, processor


def attach_adapter(model: Any, adapter_dir: str | Path) -> Any:
    """Return `model` with the LoRA adapter in `adapter_dir` attached (strict key check), in eval mode."""
    if _has_models_module():
        from . import models

        peft_model = models.load_adapter(model, adapter_dir, is_trainable=False)
    else:
        peft_model = _load_adapter_strictly(model, Path(adapter_dir))
    peft_model.eval()
    return peft_model


def detach_adapter(peft_model: Any) -> Any:
    """Remove the LoRA layers again (without merging) and return the bare base model."""
    return peft_model.unload()


def _has_models_module() -> bool:
    return importlib.util.find_spec("wgsy_lib.models") is not None


# TODO: remove the fallback below once wgsy_lib.models (written with 03_train) is on main. It repeats
# the parts of that module that evaluation needs, with the same strict adapter check.


def _load_without_models_module(base_model: str, *, device: str, dtype: str) -> tuple[Any, Any]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = resolve_path(base_model)
    if not (path / "config.json").is_file():
        raise ModelError(f"model folder {path} has no config.json; set base_model to the folder save_pretrained wrote")
    chosen_device = device
    if device == "auto":
        chosen_device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = chosen_device == "cuda" and torch.cuda.is_bf16_supported()
    chosen_dtype = torch.bfloat16 if dtype == "bf16" or (dtype == "auto" and bf16) else torch.float32
    logger.info("loading %s in %s on %s", path, chosen_dtype, chosen_device)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=chosen_dtype).to(chosen_device)
    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    return model, processor


def _load_adapter_strictly(model: Any, adapter_dir: Path) -> Any:
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    weights_file = adapter_dir / ADAPTER_WEIGHTS
    if not weights_file.is_file():
        raise ModelError(f"adapter folder {adapter_dir} has no {ADAPTER_WEIGHTS}; point it at a finished run's adapter/")
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    saved = set(load_file(str(weights_file)))
    loaded = set(get_peft_model_state_dict(peft_model))
    if saved != loaded:
        raise ModelError(
            f"adapter {adapter_dir} does not match the base model, so it would behave like the base model: "
            f"{len(saved - loaded)} adapter weight(s) have no place in the model, e.g. {sorted(saved - loaded)[:3]}; "
            f"{len(loaded - saved)} LoRA weight(s) are missing from the adapter. Load it onto the base model it "
            "was trained from (base_model_name_or_path in its adapter_config.json)."
        )
    return peft_model
