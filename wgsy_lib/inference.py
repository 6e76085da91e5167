"""Running a model over an evaluation JSONL file: batched generation and label scoring.

Both modes read the JSONL files that 02_convert writes, one example per line (wgsy_lib.answers
describes the answer formats). The prompt is rebuilt from the messages WITHOUT the assistant turn,
so the ground-truth answer never reaches the model.

- `generate_answers`: greedy batched generation. The tokenizer pads on the left (set on the
  tokenizer itself, because padding set on a processor may not reach it), only the new tokens are
  decoded (the output ids are cut at the prompt length, never the text by string length), and
  generation stops at `<end_of_turn>` as well as the end-of-sequence token.
- `score_labels`: the log-likelihood of each allowed class's answer prefix
  (`answer_prefix`, e.g. `{"diagnosis": "Down syndrome"`) given the prompt, summed over the
  prefix tokens only, for all classes in one forward pass per batch; a softmax across classes
  turns them into class probabilities.

Left padding needs explicit position ids in a plain forward pass (Gemma 3 numbers positions from
0 regardless of padding otherwise), so results at batch size 1 and N agree. A photo that fails to
load becomes an error record and the rest of its batch runs; an out-of-memory error halves the
batch size and retries.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .answers import ANSWER_FORMATS, scoring_classes, scoring_token_ids
from .errors import DataError, ImageError, ModelError
from .images import load_image
from .jsonl import iter_json_lines
from .labels import LabelSet

logger = logging.getLogger(__name__)

END_OF_TURN = "<end_of_turn>"
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class EvalExample:
    """One line of an evaluation JSONL file, with the prompt (messages up to the assistant turn)."""

    line: int
    source: str
    prompt_messages: list[dict[str, Any]]
    image: str
    label: str
    subject_id: str
    split: str
    answer_format: str
    image_sha256: str = ""

    @property
    def key(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass
class Generation:
    """The text a model generated for one example."""

    example: EvalExample
    text: str
    finished: bool
    n_new_tokens: int


@dataclass
class LabelScores:
    """Class log-likelihoods and probabilities for one example, in the order of `classes`."""

    example: EvalExample
    classes: list[str]
    log_likelihoods: list[float]
    probabilities: list[float]

    @property
    def predicted(self) -> str:
        return self.classes[int(np.argmax(self.probabilities))]


@dataclass
class ExampleError:
    """An example that could not be run (a photo that does not load), recorded instead of dropped."""

    example: EvalExample
    stage: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.example.line, "source": self.example.source, "image": self.example.image,
                "label": self.example.label, "subject_id": self.example.subject_id, "stage": self.stage,
                "error": self.message}


@dataclass
class RunResult:
    """Per-example results and errors of one pass over a file."""

    results: list = field(default_factory=list)
    errors: list[ExampleError] = field(default_factory=list)
    batch_size_used: int = 0


# --- Reading evaluation files ---------------------------------------------------------------------


def read_eval_file(path: str | Path, labels: LabelSet, *, max_examples: int = 0) -> list[EvalExample]:
    """Read an evaluation JSONL file; raise DataError naming the file and line of the first bad row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"evaluation file {path} not found; point test_files/val_file at the JSONL files 02_convert wrote")
    examples = []
    for number, record in iter_json_lines(path):
        examples.append(_parse_record(record, number, path, labels))
        if max_examples and len(examples) >= max_examples:
            break
    if not examples:
        raise DataError(f"evaluation file {path} has no examples")
    formats = sorted({example.answer_format for example in examples})
    if len(formats) > 1:
        raise DataError(f"evaluation file {path} mixes answer formats {formats}; convert it with one answer_format")
    return examples


def _parse_record(record: dict[str, Any], number: int, path: Path, labels: LabelSet) -> EvalExample:
    where = f"{path}, line {number}"
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' is missing or empty; expected the conversation 02_convert writes")
    prompt = prompt_messages(messages)
    if not any(message.get("role") == "user" for message in prompt):
        raise DataError(f"{where}: no user turn before the assistant turn; the prompt would be empty")

    images = record.get("images") or []
    image = images[0] if images else record.get("image")
    if not image:
        raise DataError(f"{where}: no image path in 'images' or 'image'")
    label = record.get("label")
    if label not in labels:
        raise DataError(f"{where}: label {label!r} is not a class of {labels.source}; the classes are {labels.names}")
    answer_format = record.get("answer_format", "json")
    if answer_format not in ANSWER_FORMATS:
        raise DataError(f"{where}: answer_format {answer_format!r} is invalid; expected one of {ANSWER_FORMATS}")
    subject_id = record.get("subject_id")
    if subject_id in (None, ""):
        raise DataError(f"{where}: 'subject_id' is missing; confidence intervals resample people and need it")
    return EvalExample(line=number, source=str(path), prompt_messages=prompt, image=str(image), label=label,
                       subject_id=str(subject_id), split=str(record.get("split", "")),
                       answer_format=answer_format, image_sha256=str(record.get("image_sha256", "")))


def prompt_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the messages before the first assistant turn: the system prompt and the user turn."""
    prompt = []
    for message in messages:
        if message.get("role") == "assistant":
            break
        prompt.append(message)
    return prompt


# --- Shared batching machinery ---------------------------------------------------------------------


def prepare_processor(processor) -> None:
    """Pad on the left, on the tokenizer itself, so every prompt ends where generation starts."""
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token_id is None:
        raise ModelError("the tokenizer has no padding token; batched evaluation needs one (Gemma's is <pad>)")


def stop_token_ids(tokenizer) -> list[int]:
    """Return the ids that end an answer: the end-of-sequence token and Gemma's <end_of_turn>."""
    ids = []
    eos = tokenizer.eos_token_id
    if isinstance(eos, list):
        ids.extend(eos)
    elif eos is not None:
        ids.append(eos)
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if end_of_turn is not None and end_of_turn != tokenizer.unk_token_id:
        ids.append(end_of_turn)
    if not ids:
        raise ModelError("the tokenizer defines neither an end-of-sequence token nor <end_of_turn>; generation could not stop")
    return sorted(set(ids))


def encode_prompts(processor, examples: Sequence[EvalExample], images: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Render each prompt with the chat template (generation prompt added) and tokenize with its image."""
    texts = [processor.apply_chat_template(example.prompt_messages, add_generation_prompt=True, tokenize=False)
             for example in examples]
    return processor(text=texts, images=[[image] for image in images], return_tensors="pt", padding=True,
                     add_special_tokens=needs_special_tokens(processor, texts))


def needs_special_tokens(processor, texts: Sequence[str]) -> bool:
    """Return False when the chat template already wrote <bos> into every text.

    Gemma 3's template writes <bos> itself; letting the tokenizer add another would give the model a
    prompt it never saw in training. Templates without <bos> still get the tokenizer's own.
    """
    bos = processor.tokenizer.bos_token
    return not (bos and all(text.startswith(bos) for text in texts))


def run_in_batches(examples: Sequence[EvalExample], batch_size: int, run_batch: Callable, *, desc: str,
                   stage: str) -> RunResult:
    """Load each batch's photos, run `run_batch(examples, images)`, and collect results and errors.

    A photo that fails to load is recorded and skipped; the rest of its batch runs. Out of memory
    halves the batch size (kept for the following batches) and retries; at batch size 1 it is an error.
    """
    if batch_size < 1:
        raise ModelError(f"batch_size must be at least 1, got {batch_size}")
    outcome = RunResult(batch_size_used=batch_size)
    size = batch_size
    position = 0
    with tqdm(total=len(examples), desc=desc, leave=False) as bar:
        while position < len(examples):
            batch = list(examples[position: position + size])
            loaded = _load_batch_images(batch, outcome.errors, stage)
            while loaded:
                chunk = loaded[:size]
                try:
                    outcome.results.extend(run_batch([item[0] for item in chunk], [item[1] for item in chunk]))
                except Exception as error:  # noqa: BLE001 - only out-of-memory errors are handled
                    if not _is_out_of_memory(error):
                        raise
                    if size == 1:
                        raise ModelError(f"out of memory at batch size 1 while running {chunk[0][0].key}; "
                                         "use a smaller model, 4-bit loading, or a device with more memory") from error
                    failed_size, size = len(chunk), max(1, len(chunk) // 2)
                    _free_memory()
                    logger.warning("out of memory at batch size %d; retrying with batch size %d", failed_size, size)
                    continue
                loaded = loaded[len(chunk):]
            position += len(batch)
            bar.update(len(batch))
    outcome.batch_size_used = size
    return outcome


def _load_batch_images(batch: Sequence[EvalExample], errors: list[ExampleError], stage: str):
    loaded = []
    for example in batch:
        try:
            loaded.append((example, load_image(example.image).image))
        except ImageError as error:
            logger.warning("skipped %s: %s", example.key, error)
            errors.append(ExampleError(example, stage, str(error)))
    return loaded


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    # MPS and some CUDA allocator paths raise a plain RuntimeError.
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _to_model(inputs: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    moved = {}
    for name, value in inputs.items():
        value = value.to(model.device)
        if name == "pixel_values":
            value = value.to(model.dtype)
        moved[name] = value
    return moved


# --- Generation -----------------------------------------------------------------------------------


def generate_answers(model, processor, examples: Sequence[EvalExample], *, batch_size: int = DEFAULT_BATCH_SIZE,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, desc: str = "generate") -> RunResult:
    """Generate an answer for every example, greedily, in left-padded batches."""
    prepare_processor(processor)
    stops = stop_token_ids(processor.tokenizer)

    def run_batch(batch, images):
        return generate_batch(model, processor, batch, images, max_new_tokens=max_new_tokens, stop_ids=stops)

    return run_in_batches(examples, batch_size, run_batch, desc=desc, stage="generate")


def generate_batch(model, processor, examples: Sequence[EvalExample], images: Sequence[Any], *,
                   max_new_tokens: int, stop_ids: Sequence[int]) -> list[Generation]:
    """Generate for one batch and decode only the tokens after each prompt."""
    tokenizer = processor.tokenizer
    inputs = _to_model(encode_prompts(processor, examples, images), model)
    prompt_length = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=list(stop_ids), pad_token_id=tokenizer.pad_token_id)
    new_tokens = output[:, prompt_length:].tolist()

    generations = []
    for example, ids in zip(examples, new_tokens):
        stop_at = next((position for position, token in enumerate(ids) if token in stop_ids), None)
        kept = ids if stop_at is None else ids[:stop_at]
        kept = [token for token in kept if token != tokenizer.pad_token_id]
        text = tokenizer.decode(kept, skip_special_tokens=False)
        generations.append(Generation(example, text, finished=stop_at is not None, n_new_tokens=len(kept)))
    return generations


# --- Label scoring --------------------------------------------------------------------------------


def score_labels(model, processor, examples: Sequence[EvalExample], labels: LabelSet, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, desc: str = "score") -> RunResult:
    """Score every allowed class for every example; see the module docstring."""
    prepare_processor(processor)
    answer_format = examples[0].answer_format if examples else "json"
    classes = scoring_classes(answer_format, labels)
    prefix_ids = [scoring_token_ids(processor.tokenizer, answer_format, name, labels) for name in classes]

    def run_batch(batch, images):
        return score_batch(model, processor, batch, images, classes=classes, prefix_ids=prefix_ids)

    return run_in_batches(examples, batch_size, run_batch, desc=desc, stage="score")


def score_batch(model, processor, examples: Sequence[EvalExample], images: Sequence[Any], *,
                classes: Sequence[str], prefix_ids: Sequence[Sequence[int]]) -> list[LabelScores]:
    """Score all classes for one batch in a single forward pass over (example, class) sequences."""
    encoded = encode_prompts(processor, examples, images)
    # NOTE: each photo goes through the vision tower once per class (K copies of pixel_values). Scoring
    # the K prefixes from the KV cache of one prompt pass would cut that cost by K at MedGemma scale.
    inputs, prefix_lengths = _expand_with_prefixes(encoded, prefix_ids, processor.tokenizer.pad_token_id)
    inputs = _to_model(inputs, model)
    longest = max(prefix_lengths)

    with torch.inference_mode():
        # Only the logits that predict prefix tokens are needed: at MedGemma's 262k-word vocabulary the
        # full logits of every prompt position would dominate memory.
        logits = model(**inputs, logits_to_keep=longest + 1).logits[:, :-1].float()
    targets = inputs["input_ids"][:, -longest:]
    token_log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    n_classes = len(classes)
    lengths = torch.tensor(prefix_lengths, device=token_log_probs.device).repeat(len(examples))
    columns = torch.arange(longest, device=token_log_probs.device)
    in_prefix = columns.unsqueeze(0) >= (longest - lengths).unsqueeze(1)
    totals = (token_log_probs * in_prefix).sum(dim=1).view(len(examples), n_classes).cpu()
    probabilities = torch.softmax(totals, dim=1)

    return [LabelScores(example, list(classes), totals[row].tolist(), probabilities[row].tolist())
            for row, example in enumerate(examples)]


def _expand_with_prefixes(encoded, prefix_ids: Sequence[Sequence[int]], pad_id: int):
    """Build one left-padded sequence per (example, class): the prompt's tokens, then the class prefix."""
    input_ids, attention, token_types = encoded["input_ids"], encoded["attention_mask"], encoded.get("token_type_ids")
    rows, type_rows = [], []
    for index in range(input_ids.shape[0]):
        keep = attention[index].bool()
        prompt = input_ids[index][keep].tolist()
        prompt_types = token_types[index][keep].tolist() if token_types is not None else [0] * len(prompt)
        for prefix in prefix_ids:
            rows.append(prompt + list(prefix))
            type_rows.append(prompt_types + [0] * len(prefix))

    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    types = torch.zeros((len(rows), length), dtype=torch.long)
    for index, (row, type_row) in enumerate(zip(rows, type_rows)):
        ids[index, length - len(row):] = torch.tensor(row)
        mask[index, length - len(row):] = 1
        types[index, length - len(row):] = torch.tensor(type_row)
    # Positions count real tokens only, so a left-padded row gets the same positions as it would alone.
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)

    expanded = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    if token_types is not None:
        expanded["token_type_ids"] = types
    n_classes = len(prefix_ids)
    for name, value in encoded.items():
        if name not in ("input_ids", "attention_mask", "token_type_ids"):
            expanded[name] = value.repeat_interleave(n_classes, dim=0)
    return expanded, [len(prefix) for prefix in prefix_ids]


# --- Records --------------------------------------------------------------------------------------


def example_record(example: EvalExample) -> dict[str, Any]:
    """Return the fields of an example that go into every prediction record."""
    data = asdict(example)
    data.pop("prompt_messages")
    return data
