"""Turning training examples into model batches, with the loss on the answer only.

TRL 1.16's `DataCollatorForVisionLanguageModeling` masks only padding for conversational vision
data. Its `assistant_only_loss` needs a chat template with `{% generation %}` markers, which
Gemma 3's template does not have, and its `completion_only_loss` needs prompt/completion data.
So `AnswerOnlyCollator` builds the labels itself: every token up to and including the
assistant header (`<start_of_turn>model\\n`) is masked, so are padding and image tokens, and the
answer is labelled through its `<end_of_turn>`, so the model learns to stop.

Nothing is truncated: an image's 256 placeholder tokens (MedGemma) must all reach the model, or
Gemma 3 fails with "image features and image tokens do not match".
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import torch

from .errors import DataError
from .images import load_image

logger = logging.getLogger(__name__)

# Labels with this value are ignored by the loss (PyTorch's cross-entropy ignore_index).
IGNORE_INDEX = -100
# Gemma 3's turn structure: the model's turn opens with this header and closes with END_OF_TURN.
ASSISTANT_HEADER = "<start_of_turn>model\n"
END_OF_TURN = "<end_of_turn>"


class AnswerOnlyCollator:
    """Collate conversational vision examples ({"messages", "images"}) into a labelled batch.

    `images` contains image paths (loaded here with `load_image`, so every stage sees the same upright
    RGB pixels) or already loaded PIL images. Returns the processor's tensors (input_ids,
    attention_mask, token_type_ids, pixel_values) plus `labels`.
    """

    def __init__(self, processor: Any, *, image_loader: Callable[[Any], Any] | None = None) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_loader = image_loader or _load_image
        self.header_ids = self.tokenizer.encode(ASSISTANT_HEADER, add_special_tokens=False)
        self.end_of_turn_id = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        if self.end_of_turn_id is None or self.end_of_turn_id == self.tokenizer.unk_token_id:
            raise DataError(f"the tokenizer has no {END_OF_TURN} token; the answer-only collator expects Gemma 3's "
                            "turn structure")
        self.image_token_ids = _image_token_ids(self.tokenizer)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [self.processor.apply_chat_template(_clean_messages(example["messages"]), tokenize=False)
                 for example in examples]
        images = [[self.image_loader(image) for image in example["images"]] for example in examples]
        batch = self.processor(text=texts, images=images, padding=True, padding_side="right",
                               add_special_tokens=False, return_tensors="pt")
        batch["labels"] = self.answer_labels(batch)
        return batch

    def answer_labels(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Return labels that keep only the answer tokens and its closing end-of-turn token."""
        input_ids = batch["input_ids"]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for row in range(input_ids.shape[0]):
            start, end = self._answer_span(input_ids[row].tolist(), row)
            labels[row, start:end] = input_ids[row, start:end]

        # The span never covers these, but the guarantee is cheap and a template change could break it.
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        if "token_type_ids" in batch:
            labels[batch["token_type_ids"] != 0] = IGNORE_INDEX
        for token_id in self.image_token_ids:
            labels[input_ids == token_id] = IGNORE_INDEX
        return labels

    def _answer_span(self, ids: list[int], row: int) -> tuple[int, int]:
        header_at = _find_last(ids, self.header_ids)
        if header_at < 0:
            raise DataError(f"batch row {row}: no assistant turn ({ASSISTANT_HEADER!r}) found after applying the chat "
                            "template; every training example needs an assistant message with the answer")
        start = header_at + len(self.header_ids)
        try:
            end = ids.index(self.end_of_turn_id, start) + 1
        except ValueError:
            raise DataError(f"batch row {row}: the answer has no closing {END_OF_TURN}; the chat template must end "
                            "the assistant turn with it") from None
        if end - start < 2:
            raise DataError(f"batch row {row}: the assistant answer is empty")
        return start, end


def _load_image(image: Any) -> Any:
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        return load_image(image).image
    return image


def _clean_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Drop the None fields that Arrow adds when content parts of different types share one column."""
    cleaned = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{key: value for key, value in part.items() if value is not None} for part in content]
        cleaned.append({"role": message["role"], "content": content})
    return cleaned


def _image_token_ids(tokenizer: Any) -> list[int]:
    ids = []
    for name in ("image_token_id", "boi_token_id", "eoi_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            ids.append(value)
    return ids


def _find_last(sequence: list[int], pattern: list[int]) -> int:
    width = len(pattern)
    for start in range(len(sequence) - width, -1, -1):
        if sequence[start:start + width] == pattern:
            return start
    return -1
