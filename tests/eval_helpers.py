"""Small evaluation inputs built on the fly: photos, JSONL files in 02_convert's format, LoRA adapters."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from wgsy_lib.answers import render_answer

INSTRUCTION = "Which genetic syndrome does this face show? Answer with JSON."


def make_photos(folder: Path, count: int, *, seed: int = 0) -> list[Path]:
    """Draw `count` small distinct face-like PNGs (sizes and colours vary, so prompts differ)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        shade = (37 * (index + seed)) % 200
        image = Image.new("RGB", (48 + 8 * (index % 5), 56), (200, 170 - shade // 4, 150))
        draw = ImageDraw.Draw(image)
        draw.ellipse((8, 8, 40, 48), fill=(220 - shade // 2, 180, 160))
        draw.line((14, 36, 34, 36 + index % 7), fill=(120, 40, 40), width=2)
        path = folder / f"photo_{seed}_{index}.png"
        image.save(path)
        paths.append(path)
    return paths


def write_eval_jsonl(path: Path, photos: list[Path], labels, *, split: str = "test", answer_format: str = "json",
                     vary_prompts: bool = True, system: str | None = None) -> Path:
    """Write a JSONL file in the training/evaluation contract, one example per photo, classes in turn."""
    names = labels.names if answer_format != "binary" else [labels.binary_positive, labels.binary_negative]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for index, photo in enumerate(photos):
            label = names[index % len(names)]
            instruction = INSTRUCTION + (" Describe the face first." * (index % 3) if vary_prompts else "")
            answer = render_answer(answer_format, label, labels)
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]},
                        {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
            if system:
                messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
            record = {"messages": messages, "images": [str(photo)], "image": str(photo), "image_sha256": "",
                      "label": label, "subject_id": f"s{index // 2}", "split": split, "answer_format": answer_format,
                      "instruction": instruction, "response": answer, "feature_source": "none", "source": "test",
                      "age": None, "sex": ""}
            handle.write(json.dumps(record) + "\n")
    return path


def make_adapter(model_dir: Path, run_dir: Path, *, seed: int, target_modules=("q_proj", "v_proj")) -> Path:
    """Save a randomly initialised LoRA adapter of the tiny model as a finished grid cell; return the run dir."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    # init_lora_weights=False draws both LoRA matrices at random, so the adapter changes the outputs
    # (the default zero-initialised B would make it identical to the base model).
    config = LoraConfig(r=4, lora_alpha=8, target_modules=list(target_modules), init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    adapter_dir = run_dir / "adapter"
    peft_model.save_pretrained(adapter_dir)
    AutoProcessor.from_pretrained(model_dir).save_pretrained(adapter_dir)
    (run_dir / "metrics.json").write_text(json.dumps({"eval_loss": 1.0}), encoding="utf-8")
    (run_dir / "run_card.json").write_text(json.dumps({"seed": seed}), encoding="utf-8")
    return run_dir
