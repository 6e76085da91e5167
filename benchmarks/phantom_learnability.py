"""Can the tiny model's image path learn the phantom cohort? A short CPU experiment (about 2-3 minutes).

Trains LoRA adapters on the tiny Gemma 3 model (wgsy_lib.tiny_model) with photos of the phantom
cohort (wgsy_lib.phantom) and measures accuracy on held-out subjects by label scoring: the class
whose answer prefix (wgsy_lib.answers.answer_prefix, answer format "diagnosis") has the highest
log-likelihood after the prompt wins. Chance is 1 / number of classes (25% with four classes).

The loop mirrors what TRL's SFTTrainer does for a conversational vision dataset with assistant-only
loss: the chat template renders the user turn (image and instruction) and the assistant's answer,
the processor expands the image, and only the answer tokens and the closing <end_of_turn> count in
the loss. It is a plain torch loop so that it runs in a couple of minutes and reports cleanly.

    .venv/bin/python benchmarks/phantom_learnability.py                 # the documented recipe
    .venv/bin/python benchmarks/phantom_learnability.py --expressivity realistic --epochs 4

Synthetic data, untrained model: the number says the pipeline can learn from images, nothing more.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wgsy_lib.answers import answer_prefix
from wgsy_lib.images import load_image
from wgsy_lib.labels import load_labels
from wgsy_lib.log import setup_logging
from wgsy_lib.manifest import data_root_for, read_manifest
from wgsy_lib.phantom import make_phantom_cohort
from wgsy_lib.tiny_model import build_tiny_model, load_tiny_model

INSTRUCTION = "Which genetic syndrome does this face show? Answer with the diagnosis only."


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expressivity", default="exaggerated")
    parser.add_argument("--subjects-per-class", type=int, default=40)
    parser.add_argument("--photos-per-subject", type=int, default=3)
    parser.add_argument("--test-share", type=float, default=0.25, help="share of subjects held out per class")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--train-projector", action="store_true", help="also train the multi-modal projector fully")
    parser.add_argument("--train-vision", action="store_true", help="train the vision tower fully (not LoRA)")
    parser.add_argument("--image-size", type=int, default=None, help="tiny model image size (default: its default)")
    parser.add_argument("--patch-size", type=int, default=None)
    parser.add_argument("--image-tokens", type=int, default=None)
    parser.add_argument("--initializer-range", type=float, default=None)
    parser.add_argument("--projector-std", type=float, default=None)
    parser.add_argument("--embedding-std", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 is fastest for a model this small, and on a busy machine by far")
    parser.add_argument("--work-dir", default=None, help="folder for the cohort and model (default: a temp folder)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    setup_logging("WARNING")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="wgsy-learnability-"))
    started = time.monotonic()

    cohort = make_phantom_cohort(work / "cohort", subjects_per_class=args.subjects_per_class,
                                 photos_per_subject=args.photos_per_subject, expressivity=args.expressivity,
                                 seed=args.seed, duplicate_rate=0.0, overwrite=True)
    overrides = {name: value for name, value in (("image_size", args.image_size), ("patch_size", args.patch_size),
                                                  ("image_tokens", args.image_tokens),
                                                  ("initializer_range", args.initializer_range),
                                                  ("projector_std", args.projector_std),
                                                  ("embedding_std", args.embedding_std)) if value is not None}
    model_dir = build_tiny_model(work / "model", overwrite=True, **overrides)
    model, processor = load_tiny_model(model_dir)
    prepared = time.monotonic()

    labels = load_labels()
    classes = labels.names
    train, test = split_by_subject(cohort.manifest, args.test_share, args.seed)
    train_examples = [encode_example(processor, image, label) for image, label in train]
    test_images = [processor.image_processor(load_image(image).image, return_tensors="pt")["pixel_values"]
                   for image, _ in test]

    model = add_adapters(model, args)
    before = score_accuracy(model, processor, test_images, [label for _, label in test], classes, labels)
    train_loop(model, train_examples, processor.tokenizer.pad_token_id, args)
    trained = time.monotonic()
    after = score_accuracy(model, processor, test_images, [label for _, label in test], classes, labels)

    report = {
        "expressivity": args.expressivity, "train_photos": len(train), "test_photos": len(test),
        "test_subjects": len({image.split("/")[-1].split("_")[0] for image, _ in test}),
        "chance": round(1 / len(classes), 3), "accuracy_before": round(before, 3), "accuracy_after": round(after, 3),
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "train_projector": args.train_projector,
        "model": json.loads((model_dir / "config.json").read_text())["vision_config"] | {"mm_tokens_per_image": json.loads(
            (model_dir / "config.json").read_text())["mm_tokens_per_image"]},
        "seconds_prepare": round(prepared - started, 1), "seconds_train": round(trained - prepared, 1),
        "seconds_total": round(time.monotonic() - started, 1), "threads": args.threads,
    }
    print(json.dumps(report, indent=2))


def split_by_subject(manifest: Path, test_share: float, seed: int) -> tuple[list, list]:
    frame = read_manifest(manifest)
    root = data_root_for(manifest)
    rng = random.Random(seed)
    train, test = [], []
    for _label, group in frame.groupby("label"):
        subjects = sorted(group["subject_id"].unique())
        rng.shuffle(subjects)
        held_out = set(subjects[: max(1, round(len(subjects) * test_share))])
        for row in group.itertuples():
            (test if row.subject_id in held_out else train).append((str(root / row.image), row.label))
    rng.shuffle(train)
    return train, test


def messages_for(answer: str | None) -> list[dict]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def encode_example(processor, image_path: str, label: str) -> dict:
    image = load_image(image_path).image
    prompt = processor.apply_chat_template(messages_for(None), tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(messages_for(label), tokenize=False)
    encoded = processor(text=[full], images=[[image]], return_tensors="pt")
    prompt_length = processor(text=[prompt], images=[[image]], return_tensors="pt")["input_ids"].shape[1]
    labels = encoded["input_ids"].clone()
    labels[:, :prompt_length] = -100
    labels[:, -1] = -100  # the "\n" after <end_of_turn>: the model stops at <end_of_turn>
    return {"input_ids": encoded["input_ids"][0], "token_type_ids": encoded["token_type_ids"][0],
            "pixel_values": encoded["pixel_values"][0], "labels": labels[0]}


def collate(examples: list[dict], pad_id: int) -> dict:
    length = max(len(example["input_ids"]) for example in examples)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.stack([torch.cat([example[key], torch.full((length - len(example[key]),), value)])
                            for example in examples])

    input_ids = pad("input_ids", pad_id)
    return {"input_ids": input_ids, "attention_mask": (pad("input_ids", -1) != -1).long(),
            "token_type_ids": pad("token_type_ids", 0), "labels": pad("labels", -100),
            "pixel_values": torch.stack([example["pixel_values"] for example in examples])}


def add_adapters(model, args):
    from peft import LoraConfig, get_peft_model

    saved = (["multi_modal_projector"] if args.train_projector else []) + (["vision_tower"] if args.train_vision else [])
    targets = r"model\.language_model.*\.(q|k|v|o|gate|up|down)_proj" if args.train_vision else "all-linear"
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules=targets,
                        modules_to_save=saved or None)
    return get_peft_model(model, config)


def train_loop(model, examples: list[dict], pad_id: int, args) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    steps = args.epochs * math.ceil(len(examples) / args.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, steps // 10)) * max(0.0, 1 - step / steps))
    model.train()
    rng = random.Random(args.seed)
    for epoch in range(args.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), args.batch_size):
            batch = collate([examples[index] for index in order[start:start + args.batch_size]], pad_id)
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        print(f"epoch {epoch + 1}: loss {np.mean(losses):.3f}", flush=True)
    model.eval()


@torch.no_grad()
def score_accuracy(model, processor, images: list, truth: list[str], classes: list[str], labels) -> float:
    """Label scoring: the class whose answer prefix is most likely after the prompt wins."""
    model.eval()
    tokenizer = processor.tokenizer
    prompt = processor.apply_chat_template(messages_for(None), tokenize=False, add_generation_prompt=True)
    prompt_text = prompt.replace("<start_of_image>", processor.full_image_sequence)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answers = [tokenizer(answer_prefix("diagnosis", name, labels), add_special_tokens=False)["input_ids"]
               for name in classes]
    length = len(prompt_ids) + max(len(answer) for answer in answers)
    correct = 0
    for pixel_values, label in zip(images, truth):
        rows, types = [], []
        for answer in answers:
            ids = prompt_ids + answer + [tokenizer.pad_token_id] * (length - len(prompt_ids) - len(answer))
            rows.append(ids)
            types.append([1 if token == tokenizer.image_token_id else 0 for token in ids])
        input_ids = torch.tensor(rows)
        logits = model(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(),
                       token_type_ids=torch.tensor(types), pixel_values=pixel_values.repeat(len(answers), 1, 1, 1)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for row, answer in enumerate(answers):
            positions = range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(answer))
            scores.append(sum(logprobs[row, position, token].item() for position, token in zip(positions, answer)))
        correct += classes[int(np.argmax(scores))] == label
    model.train()
    return correct / len(truth)


if __name__ == "__main__":
    main()
