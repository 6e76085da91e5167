"""Loading the base model and swapping adapters for evaluation, on top of wgsy_lib.models.

Evaluation loads the base model once and attaches each adapter in turn, then removes it again, so a
grid of N cells costs one model load rather than N. An adapter whose weights do not match the
model is a ModelError: PEFT only warns, and the model would then behave like the base model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import models
from .memory import check_memory_before_loading

logger = logging.getLogger(__name__)


def load_for_evaluation(base_model: str, *, device: str = "auto", dtype: str = "auto",
                        offload_folder: str | None = None) -> tuple[Any, Any]:
    """Load the base model in eval mode and its processor (padding on the left); return both."""
    source = models.locate_model(base_model)
    chosen_device = models.choose_device(device)
    chosen_dtype = models.choose_dtype(chosen_device, dtype, model_type=source.model_type)
    attention = models.choose_attention("auto", model_type=source.model_type, training=False)
    # Batch size 1 is what the out-of-memory halving reaches, so only a run that cannot fit even then stops.
    check_memory_before_loading(source.local_dir or source.name, device=chosen_device, offload_folder=offload_folder,
                                dtype=str(chosen_dtype).removeprefix("torch."), training=False, lora_r=0,
                                batch_size=1, attn_implementation=attention)
    model = models.load_base_model(source, device=chosen_device, dtype=chosen_dtype, attn_implementation=attention,
                                   offload_folder=offload_folder)
    processor = models.load_processor(source.local_dir or source.name, padding_side="left")

    model.eval()
    # Training may leave use_cache=False in the saved config (needed for gradient checkpointing);
    # generation without the cache recomputes the whole prefix at every step.
    model.config.use_cache = True
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.use_cache = True
    return model, processor


def attach_adapter(model: Any, adapter_dir: str | Path) -> Any:
    """Return `model` with the LoRA adapter in `adapter_dir` attached (strict key check), in eval mode."""
    peft_model = models.load_adapter(model, adapter_dir, is_trainable=False)
    peft_model.eval()
    return peft_model


def detach_adapter(peft_model: Any) -> Any:
    """Remove the LoRA layers again (without merging) and return the bare base model."""
    return peft_model.unload()
