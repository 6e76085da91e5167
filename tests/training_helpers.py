"""Helpers shared by the training and grid tests.

`write_phantom_jsonl` writes the training JSONL (the 02_convert contract) for a phantom cohort,
split by subject. It replaces 02_convert in these tests, so they control the split and the answer format directly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

from wgsy_lib.answers import render_answer
from wgsy_lib.labels import load_labels

INSTRUCTION = "Which genetic syndrome does the face in this photograph show? Answer with JSON."


def write_phantom_jsonl(cohort_root: Path, out_dir: Path, *, val_subjects_per_class: int = 2, seed: int = 0,
                        answer_format: str = "json") -> dict[str, Path]:
    """Write train.jsonl and val.jsonl for the phantom cohort in `cohort_root`, split by subject."""
    labels = load_labels()
    frame = pd.read_csv(cohort_root / "manifest.csv", dtype=str, keep_default_na=False)
    # Planted duplicates are copies of another subject's photo; keeping them out avoids a leak.
    frame = frame[frame["planted_duplicate_of"] == ""]
    rng = random.Random(seed)
    val_subjects = set()
    for _, group in frame.groupby("label"):
        subjects = sorted(group["subject_id"].unique())
        rng.shuffle(subjects)
        val_subjects.update(subjects[:val_subjects_per_class])

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"train": out_dir / "train.jsonl", "val": out_dir / "val.jsonl"}
    handles = {split: open(path, "w", encoding="utf-8") for split, path in files.items()}
    try:
        for row in frame.itertuples(index=False):
            split = "val" if row.subject_id in val_subjects else "train"
            handles[split].write(json.dumps(_example(row, split, cohort_root, labels, answer_format)) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    return files


def _example(row, split: str, cohort_root: Path, labels, answer_format: str) -> dict:
    image = str((cohort_root / row.image).resolve())
    answer = render_answer(answer_format, row.label, labels)
    return {
        "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]},
                     {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
        "images": [image], "image": image, "image_sha256": "", "label": row.label, "subject_id": row.subject_id,
        "split": split, "answer_format": answer_format, "instruction": INSTRUCTION, "response": answer,
        "feature_source": "none", "source": row.source, "age": None, "sex": "",
    }
