"""A small cohort built in a temporary folder, for the 02_convert tests: blocky random faces (distinct
perceptual hashes), several photos per person, and optional planted duplicates and annotations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from wgsy_lib.annotation_store import AnnotationRecord, AnnotationStore
from wgsy_lib.images import file_sha256
from wgsy_lib.manifest import write_manifest

CLASSES = ("Williams syndrome", "Down syndrome", "healthy control")
BLIND_FEATURES = {"forehead": "broad", "periorbital_fullness": "present", "nasal_bridge": "typical",
                  "ptosis": "uncertain"}


def blocky_image(rng: np.random.Generator, size: int = 96) -> Image.Image:
    """Return an RGB image of random 8x8 blocks scaled up: unrelated images differ by ~32 pHash bits."""
    blocks = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((size, size), Image.Resampling.BILINEAR)


def make_cohort(root: Path, *, subjects_per_class: int = 6, photos_per_subject: int = 2, seed: int = 0,
                classes=CLASSES, plant_duplicates: bool = True) -> Path:
    """Write photos under root/photos and root/manifest.csv; return the manifest path.

    With `plant_duplicates`, subject 1 of the first class gets a resized, re-encoded copy of subject
    0's first photo (near duplicate), and subject 2 a byte-identical copy of it (exact duplicate).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for class_index, label in enumerate(classes):
        for subject_index in range(subjects_per_class):
            subject = f"c{class_index}s{subject_index}"
            age = float(rng.integers(2, 40))
            sex = ("female", "male")[int(rng.integers(0, 2))]
            for photo_index in range(photos_per_subject):
                relative = f"photos/{subject}_{photo_index}.png"
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                blocky_image(rng).save(root / relative)
                rows.append({"image": relative, "subject_id": subject, "label": label, "label_raw": label,
                             "source": "clinic" if label != "healthy control" else "web", "age": age, "sex": sex})
    if plant_duplicates:
        original = root / "photos/c0s0_0.png"
        near = Image.open(original).convert("RGB").resize((80, 80), Image.Resampling.LANCZOS)
        near.save(root / "photos/c0s1_near.jpg", quality=85)
        (root / "photos/c0s2_exact.png").write_bytes(original.read_bytes())
        for relative, subject in (("photos/c0s1_near.jpg", "c0s1"), ("photos/c0s2_exact.png", "c0s2")):
            template = next(row for row in rows if row["subject_id"] == subject)
            rows.append({**template, "image": relative})
    manifest = root / "manifest.csv"
    write_manifest(pd.DataFrame(rows), manifest, data_root=root)
    return manifest


def annotate(manifest: Path, store_path: Path, *, mode: str = "blind", features=None, only=None) -> Path:
    """Append one ok annotation per photo (or per photo whose image path is in `only`)."""
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    store = AnnotationStore(store_path)
    for image in frame["image"]:
        if only is not None and image not in only:
            continue
        path = manifest.parent / image
        store.append(AnnotationRecord(image_sha256=file_sha256(path), image=str(path), backend="mock", model="mock-model",
                                      prompt_version="v1", mode=mode, status="ok",
                                      features=dict(features or BLIND_FEATURES), explanation="Broad forehead."))
    return store_path
