"""The equivalence check of an export: predictions of base + adapter against the merged model.

Each check example is run through a model twice: one forward pass for the logits at every
position, and a greedy generation. `compare_outputs` reports the largest absolute logit difference
and whether the argmax tokens and the generated tokens are identical.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .errors import DataError
from .images import load_image
from .jsonl import iter_json_lines
from .paths import resolve_path

logger = logging.getLogger(__name__)

SYNTHETIC_IMAGE_SIZE = 96
SYNTHETIC_PROMPTS = (
    "Which genetic syndrome, if any, do the facial features in this photograph suggest?",
    "Describe the facial features in this photograph.",
)


@dataclass
class PromptExample:
    """A prompt to check: chat messages up to the user turn, and the images its image parts refer to."""

    name: str
    messages: list[dict[str, Any]]
    images: list[Any] = field(default_factory=list)  # file paths or PIL images


@dataclass
class ModelOutputs:
    """One model's logits and greedy generation for one example."""

    logits: torch.Tensor  # (positions, vocabulary), float32 on the CPU
    generated_ids: list[int]
    generated_text: str


@dataclass
class CheckResult:
    """Comparison of one example's merged outputs with those of base + adapter."""

    example: str
    max_abs_logit_diff: float
    argmax_agree: bool
    generation_agree: bool
    generated_unmerged: str
    generated_merged: str
    agree: bool = field(init=False)

    def __post_init__(self) -> None:
        self.agree = self.argmax_agree and self.generation_agree


def load_check_examples(source: str | Path | list[PromptExample] | None, *, limit: int) -> list[PromptExample]:
    """Return up to `limit` check examples from a JSONL file, a list, or synthetic defaults."""
    if source is None:
        return synthetic_examples()[:limit]
    if isinstance(source, list):
        return source[:limit]

    path = resolve_path(source)
    if not path.is_file():
        raise DataError(f"check examples file {path} not found; pass a JSONL file written by 02_convert (e.g. val.jsonl)")
    examples = []
    for line_number, row in iter_json_lines(path):
        if len(examples) == limit:
            break
        examples.append(_example_from_row(path, line_number, row))
    if not examples:
        raise DataError(f"check examples file {path} contains no examples")
    return examples


def _example_from_row(path: Path, line_number: int, row: dict[str, Any]) -> PromptExample:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{path} line {line_number} has no 'messages' list; expected the training JSONL format of 02_convert")
    # Drop the assistant turn, because the check compares what each model predicts after the prompt.
    while messages and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    images = row.get("images") or ([row["image"]] if row.get("image") else [])
    return PromptExample(name=f"{path.name}:{line_number}", messages=messages, images=list(images))


def synthetic_examples() -> list[PromptExample]:
    """Return two fixed prompts on a generated gradient image, for exports without check data."""
    gradient = Image.linear_gradient("L").resize((SYNTHETIC_IMAGE_SIZE, SYNTHETIC_IMAGE_SIZE)).convert("RGB")
    examples = []
    for index, prompt in enumerate(SYNTHETIC_PROMPTS):
        content = [{"type": "image"}, {"type": "text", "text": prompt}]
        examples.append(PromptExample(name=f"synthetic:{index + 1}", messages=[{"role": "user", "content": content}],
                                      images=[gradient]))
    return examples


def build_inputs(processor: Any, example: PromptExample, device: torch.device) -> dict[str, torch.Tensor]:
    """Render the chat template and process text and images into model inputs on `device`."""
    prompt = processor.apply_chat_template(example.messages, add_generation_prompt=True, tokenize=False)
    images = [image if isinstance(image, Image.Image) else load_image(image).image for image in example.images]
    inputs = processor(text=[prompt], images=[images] if images else None, return_tensors="pt")
    return {name: value.to(device) for name, value in inputs.items()}


@torch.no_grad()
def record_outputs(model: torch.nn.Module, processor: Any, examples: list[PromptExample], *,
                   max_new_tokens: int, device: torch.device) -> list[ModelOutputs]:
    """Run each example through `model`: logits at every position and a greedy generation."""
    tokenizer = getattr(processor, "tokenizer", processor)
    outputs = []
    for example in examples:
        inputs = build_inputs(processor, example, device)
        logits = model(**inputs).logits[0].float().cpu()
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
        # Cut the prompt at the token level: generate returns the prompt ids followed by the new ones.
        new_ids = generated[0, inputs["input_ids"].shape[1]:].tolist()
        outputs.append(ModelOutputs(logits, new_ids, tokenizer.decode(new_ids, skip_special_tokens=True)))
    return outputs


def compare_outputs(reference: list[ModelOutputs], merged: list[ModelOutputs], names: list[str] | None = None) -> list[CheckResult]:
    """Compare base + adapter outputs (`reference`) with the merged model's, example by example."""
    results = []
    for index, (before, after) in enumerate(zip(reference, merged, strict=True)):
        results.append(CheckResult(
            example=names[index] if names else f"example {index + 1}",
            max_abs_logit_diff=float((before.logits - after.logits).abs().max()),
            argmax_agree=bool(torch.equal(before.logits.argmax(-1), after.logits.argmax(-1))),
            generation_agree=before.generated_ids == after.generated_ids,
            generated_unmerged=before.generated_text,
            generated_merged=after.generated_text,
        ))
    return results
