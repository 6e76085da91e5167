"""The local backend: a transformers image-text-to-text model on this machine (MedGemma, the
project's tiny test model, or any checkpoint folder), so patient photos never leave it.

The model is loaded from a local folder only (`local_files_only`), prompts go through the
checkpoint's own chat template, photos are batched with left padding (so every prompt ends where
generation starts), and only the new tokens are decoded. Answers are validated exactly like API
answers; a run that stops at the token limit is reported as finish reason `length` (truncated).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..paths import resolve_path
from .base import AnnotationRequest, BackendReply

logger = logging.getLogger(__name__)

END_OF_TURN = "<end_of_turn>"


class LocalBackend:
    """Generate annotations with a local checkpoint; one `annotate_batch` call per batch of photos."""

    name = "local"

    def __init__(self, model_path: str | Path, *, dtype: str = "auto", temperature: float = 0.0):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = resolve_path(model_path)
        if not (path / "config.json").is_file():
            raise ModelError(f"local model {path} not found (no config.json there); set model to the folder of a "
                             "downloaded checkpoint such as MedGemma, or build the tiny test model")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = _pick_dtype(dtype, torch, self.device)
        self.temperature = temperature
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.processor.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.stop_ids = _stop_token_ids(self.processor.tokenizer)
        logger.info("loaded local model %s on %s in %s", path, self.device, str(self.dtype).removeprefix("torch."))

    def annotate_batch(self, requests: list[AnnotationRequest]) -> list[BackendReply]:
        """Generate one answer per request in a single left-padded batch."""
        import torch

        from ..inference import needs_special_tokens

        texts = [self.processor.apply_chat_template(_messages(request), add_generation_prompt=True, tokenize=False)
                 for request in requests]
        images = [[request.image] for request in requests]
        inputs = self.processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt",
                                add_special_tokens=needs_special_tokens(self.processor, texts))
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        max_new_tokens = max(request.max_answer_length for request in requests)
        sampling: dict[str, Any] = {"do_sample": False}
        if self.temperature > 0:
            sampling = {"do_sample": True, "temperature": self.temperature}
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=self.stop_ids,
                                         pad_token_id=self.processor.tokenizer.pad_token_id, **sampling)
        # The prompt is cut at the token level: with left padding every prompt ends at the same column.
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        replies = []
        for row in new_tokens:
            ids = row.tolist()
            stopped = any(token in self.stop_ids for token in ids)
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
            finish_reason = "stop" if stopped or len(ids) < max_new_tokens else "length"
            generated = sum(1 for token in ids if token != self.processor.tokenizer.pad_token_id)
            replies.append(BackendReply(text=text, finish_reason=finish_reason,
                                        usage={"prompt_tokens": int(inputs["attention_mask"].shape[1]),
                                               "completion_tokens": generated}))
        return replies


def _messages(request: AnnotationRequest) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": [{"type": "text", "text": request.prompt.system}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": request.prompt.user}]},
    ]


def _pick_dtype(name: str, torch: Any, device: str) -> Any:
    if name == "bfloat16":
        return torch.bfloat16
    if name == "float32":
        return torch.float32
    # fp16 overflows in Gemma 3, so auto never picks it: bf16 where the GPU supports it, else fp32.
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _stop_token_ids(tokenizer: Any) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        ids.append(end_of_turn)
    return ids
