"""Helpers shared by the annotation tests: a small synthetic cohort and configs for the mock server."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
from PIL import Image

from wgsy_lib.annotate import AnnotateConfig
from wgsy_lib.manifest import write_manifest

CLASSES = ["Williams syndrome", "Down syndrome", "Goldenhar syndrome", "healthy control"]


def make_cohort(folder: Path, count: int = 6, *, size: tuple[int, int] = (96, 128)) -> Path:
    """Write `count` distinct small photos and a manifest; return the manifest path."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    generator = random.Random(count)
    for index in range(count):
        image = Image.new("RGB", size, (generator.randrange(256), generator.randrange(256), index % 256))
        image.putpixel((index % size[0], 0), (255, 255, 255))
        name = f"photo_{index:03d}.jpg"
        image.save(images / name, quality=90)
        rows.append({"image": f"images/{name}", "subject_id": f"S{index // 2:03d}", "label": CLASSES[index % len(CLASSES)],
                     "label_raw": CLASSES[index % len(CLASSES)], "source": "test", "age": 10, "sex": "female"})
    return write_manifest(pd.DataFrame(rows), folder / "manifest.csv", data_root=folder)


def server_config(manifest: Path, server, folder: Path, **overrides) -> AnnotateConfig:
    values = dict(manifest=str(manifest), backend="openai", model="mock-vision", base_url=server.base_url,
                  output_dir=str(folder / "out"), concurrency=4, max_retry_wait_s=2.0, request_timeout_s=5.0,
                  phenopackets=False, browser=False)
    values.update(overrides)
    return AnnotateConfig(**values)
