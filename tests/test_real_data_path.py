"""The real-data path of docs/real_data.md, run on a small photo tree laid out as a clinic keeps it.

The tree has a folder per class (one with a Chinese name) and a folder per subject. Its photos
come in the formats real collections contain: EXIF rotation, PNG with alpha, grayscale, CMYK,
upper-case extension, spaces in names, a .DS_Store and a corrupt file. Beside it are a
UTKFace-style control folder with one malformed name, and an annotation file of the earlier WGSY
scripts written on another machine.
The steps are the documented ones: `wgsy import folders / utkface / legacy / merge`, then
01_annotate (the local mock OpenAI server stands in for the API), 02_convert, a one-cell grid and
04_evaluate, with parameters copied from params/example/ and the tiny model standing in for
MedGemma.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from PIL import Image, ImageDraw

from wgsy_lib.annotate import AnnotateConfig
from wgsy_lib.cli import main as wgsy
from wgsy_lib.convert import ConvertConfig
from wgsy_lib.evaluation import EvaluateConfig
from wgsy_lib.grid import expand_cells, load_grid
from wgsy_lib.paths import params_dir
from wgsy_lib.training import TrainConfig

EXAMPLE = params_dir() / "example"
PLACEHOLDER_PREFIX = "outputs/my_cohort"
PLACEHOLDER_MODEL = "models/medgemma-4b-it"
OLD_MACHINE_ROOT = "/home/olduser/wgsy/photos"


# --- params/example/ --------------------------------------------------------------------------


def _example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLE / name).read_text(encoding="utf-8"))


def _fill(value: Any, replacements: dict[str, str]) -> Any:
    """Replace the placeholders of params/example/ (path prefixes) the way a user edits the copy."""
    if isinstance(value, str):
        for placeholder, real in replacements.items():
            if value == placeholder or value.startswith(placeholder + "/"):
                return real + value[len(placeholder):]
        return value
    if isinstance(value, list):
        return [_fill(item, replacements) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, replacements) for key, item in value.items()}
    return value


@pytest.mark.parametrize("name, config_class", [
    ("01_annotate.yaml", AnnotateConfig), ("02_convert.yaml", ConvertConfig), ("04_evaluate.yaml", EvaluateConfig),
])
def test_example_parameters_validate(name, config_class):
    config = config_class.from_yaml(EXAMPLE / name)
    values = config.to_dict()
    for key in ("manifest", "output_dir", "store", "runs_dir", "val_file"):
        if values.get(key):
            assert str(values[key]).startswith(PLACEHOLDER_PREFIX + "/"), (name, key, values[key])


def test_example_files_open_with_comment():
    for path in sorted(EXAMPLE.glob("*.yaml")):
        head = path.read_text(encoding="utf-8").splitlines()[0]
        assert head.startswith("#"), f"{path} should open with a comment saying what to change"
        assert "my_cohort" in path.read_text(encoding="utf-8")


def test_example_annotation_backends():
    values = _example("01_annotate.yaml")
    assert values["backend"] == "openai"
    assert values["base_url"] == ""
    assert values["key_env_var"] == "OPENAI_API_KEY"
    text = (EXAMPLE / "01_annotate.yaml").read_text(encoding="utf-8")
    # The two alternatives are there, commented out, and no key is ever written in the file.
    assert "# backend: local" in text
    assert "# base_url: http://127.0.0.1" in text
    assert "sk-" not in text


def test_example_grid_axes():
    spec = load_grid(EXAMPLE / "grid.yaml")
    reference = load_grid(params_dir() / "grid.yaml")
    assert spec.axes == reference.axes == {"r": [4, 8, 16], "lora_dropout": [0.1, 0.2, 0.3]}
    cells = expand_cells(spec)
    assert len(cells) == 9
    for cell in cells:
        config = TrainConfig.from_mapping(cell.parameters, source=str(cell.run_dir))
        assert config.model_name_or_path == PLACEHOLDER_MODEL


def test_empty_required_path_rejected():
    from wgsy_lib.errors import ConfigError

    values = {**_example("04_evaluate.yaml"), "base_model": ""}
    with pytest.raises(ConfigError, match="base_model"):
        EvaluateConfig.from_mapping(values)


# --- the photo tree ---------------------------------------------------------------------------


def _face(seed: int, size: int = 160) -> Image.Image:
    """A simple drawn face on a noisy background; every seed gives a different picture."""
    rng = random.Random(seed)
    noise = Image.effect_noise((size, size), 40 + seed % 30).convert("RGB")
    tint = Image.new("RGB", (size, size), (rng.randint(60, 200), rng.randint(60, 200), rng.randint(60, 200)))
    image = Image.blend(noise, tint, 0.6)
    draw = ImageDraw.Draw(image)
    cx, cy = size // 2 + rng.randint(-10, 10), size // 2 + rng.randint(-8, 8)
    w, h = rng.randint(45, 60), rng.randint(60, 75)
    draw.ellipse((cx - w, cy - h, cx + w, cy + h), fill=(rng.randint(170, 240), rng.randint(130, 190), 120))
    gap = rng.randint(12, 26)
    for side in (-1, 1):
        draw.ellipse((cx + side * gap - 7, cy - 20, cx + side * gap + 7, cy - 10), fill=(30, 30, 30))
    draw.line((cx - 18, cy + 30, cx + 18, cy + 30 + rng.randint(-6, 6)), fill=(120, 30, 30), width=3)
    return image


def _save(image: Image.Image, path: Path, kind: str = "jpeg") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "jpeg":
        image.convert("RGB").save(path, "JPEG", quality=90)
    elif kind == "rotated":  # stored sideways with EXIF orientation 6 (rotate 90 clockwise to view)
        exif = Image.Exif()
        exif[0x0112] = 6
        image.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", exif=exif.tobytes())
    elif kind == "rgba":
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.new("L", image.size, 200))
        rgba.save(path, "PNG")
    elif kind == "gray":
        image.convert("L").save(path, "JPEG")
    elif kind == "cmyk":
        image.convert("CMYK").save(path, "JPEG")
    else:
        raise ValueError(kind)


def build_clinic_tree(root: Path) -> dict[str, Any]:
    """Write the photo tree of a clinic and return what the test needs to know about it."""
    photos = root / "photos"
    seed = iter(range(1000))
    kinds = ["jpeg", "rotated", "rgba", "gray", "cmyk"]
    legacy_records = []
    for class_folder, prefix, legacy_label in (("Williams syndrome", "WS", 1), ("唐氏综合征", "DS", None),
                                                ("control", "HC", 0)):
        for number in range(1, 5):
            subject = photos / class_folder / f"{prefix}-{number:03d}"
            for shot in range(2):
                kind = kinds[(number + shot) % len(kinds)]
                suffix = ".png" if kind == "rgba" else ".jpg"
                name = f"front{suffix}" if shot == 0 else f"visit 2 side{suffix}"
                if prefix == "WS" and number == 1 and shot == 0:
                    name = "FRONT.JPG"  # an upper-case extension from a camera
                path = subject / name
                _save(_face(next(seed)), path, kind)
                if legacy_label is not None:
                    relative = path.relative_to(photos).as_posix()
                    legacy_records.append({
                        "image": f"{OLD_MACHINE_ROOT}/{relative}",  # written on another machine
                        "label": legacy_label,
                        "parsed_annotation": {"Forehead": "broad forehead", "Eye Spacing": "normal",
                                              "philtrum": "long philtrum"},
                    })
    (photos / "Williams syndrome" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    corrupt = photos / "唐氏综合征" / "DS-004" / "scan broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)

    utkface = root / "UTKFace"
    utk_names = ["25_1_2_20170116174525125.jpg.chip.jpg", "31_0_0_20170117190712457.jpg.chip.jpg",
                 "8_1_3_20170109204341263.jpg.chip.jpg", "62_0_1_20170111182452832.jpg.chip.jpg"]
    for name in utk_names:
        _save(_face(next(seed)), utkface / name)
    malformed = "45_1_20170116174525125.jpg.chip.jpg"  # the race field is missing, as in some released files
    _save(_face(next(seed)), utkface / malformed)

    legacy_file = root / "train_ws_features.json"
    legacy_file.write_text(json.dumps(legacy_records, ensure_ascii=False, indent=1), encoding="utf-8")
    return {"photos": photos, "utkface": utkface, "legacy": legacy_file, "corrupt": corrupt,
            "malformed": malformed, "legacy_count": len(legacy_records)}


# --- the documented path ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, tiny_model_dir):
    """Run docs/real_data.md's steps once; return the folders and files the checks read."""
    from wgsy_lib.openai_mock import MockOpenAIServer

    root = tmp_path_factory.mktemp("clinic")
    tree = build_clinic_tree(root)
    cohort = root / "outputs" / "my_cohort"
    replacements = {PLACEHOLDER_PREFIX: str(cohort), PLACEHOLDER_MODEL: str(tiny_model_dir)}

    # 1. Manifests: a folder per class, UTKFace controls, the earlier scripts' file, merged.
    assert wgsy(["import", "folders", str(tree["photos"]), "--out", str(cohort / "clinic" / "manifest.csv")]) == 0
    assert wgsy(["import", "utkface", str(tree["utkface"]), "--out", str(cohort / "utkface" / "manifest.csv")]) == 0
    assert wgsy(["import", "legacy", str(tree["legacy"]), "--data-root", str(tree["photos"]),
                 "--out", str(cohort / "legacy" / "manifest.csv")]) == 0
    assert wgsy(["import", "merge", str(cohort / "clinic" / "manifest.csv"), str(cohort / "utkface" / "manifest.csv"),
                 "--out", str(cohort / "cohort" / "manifest.csv")]) == 0

    # 2. The parameter folder: params/example/ copied, placeholders replaced.
    my_params = root / "params" / "my_cohort"
    my_params.mkdir(parents=True)
    for name in ("01_annotate.yaml", "02_convert.yaml", "grid.yaml", "04_evaluate.yaml"):
        (my_params / name).write_text(yaml.safe_dump(_fill(_example(name), replacements), allow_unicode=True, sort_keys=False),
                                      encoding="utf-8")

    # 3. 01_annotate against an OpenAI-compatible server on this machine (backend B of the example).
    annotate = yaml.safe_load((my_params / "01_annotate.yaml").read_text(encoding="utf-8"))
    with MockOpenAIServer() as server:
        annotate.update(model="mock-vision", base_url=server.base_url, concurrency=4,
                        limit=12)  # a trial run: the rest of the photos get no blind annotation
        (my_params / "01_annotate.yaml").write_text(yaml.safe_dump(annotate, allow_unicode=True, sort_keys=False),
                                                    encoding="utf-8")
        status = wgsy(["annotate", str(my_params / "01_annotate.yaml")])
    assert status == 0, (cohort / "annotate" / "01_annotate.log").read_text(encoding="utf-8")[-3000:]

    # 4. 02_convert with the legacy store listed, as the example's comment describes.
    convert = yaml.safe_load((my_params / "02_convert.yaml").read_text(encoding="utf-8"))
    convert["annotations"].append(str(cohort / "legacy" / "legacy_annotations.jsonl"))
    convert["allow_label_conditioned_train"] = True
    (my_params / "02_convert.yaml").write_text(yaml.safe_dump(convert, allow_unicode=True, sort_keys=False),
                                               encoding="utf-8")
    assert wgsy(["convert", str(my_params / "02_convert.yaml")]) == 0, \
        (cohort / "data" / "02_convert.log").read_text(encoding="utf-8")[-3000:]

    # 5. A one-cell grid with very few steps, then 04_evaluate, through the documented commands.
    grid = yaml.safe_load((my_params / "grid.yaml").read_text(encoding="utf-8"))
    grid["axes"] = {"r": [4], "lora_dropout": [0.1]}
    grid["base"].update(num_train_epochs=1, max_steps=2, gradient_accumulation_steps=1, per_device_train_batch_size=4,
                        gradient_checkpointing=False, logging_steps=1, eval_steps=2, save_steps=2, torch_threads=1,
                        val_max_examples=8)
    (my_params / "grid.yaml").write_text(yaml.safe_dump(grid, allow_unicode=True, sort_keys=False), encoding="utf-8")
    assert wgsy(["grid", str(my_params / "grid.yaml")]) == 0

    evaluate = yaml.safe_load((my_params / "04_evaluate.yaml").read_text(encoding="utf-8"))
    evaluate.update(max_new_tokens=16, n_bootstrap=100, modes=["score"])
    (my_params / "04_evaluate.yaml").write_text(yaml.safe_dump(evaluate, allow_unicode=True, sort_keys=False), encoding="utf-8")
    assert wgsy(["evaluate", str(my_params / "04_evaluate.yaml")]) == 0
    return {"root": root, "tree": tree, "cohort": cohort, "params": my_params}


def _problems(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "problems.csv", dtype=str, keep_default_na=False)


def test_import_reports_bad_files(real_run):
    cohort, tree = real_run["cohort"], real_run["tree"]
    clinic = _problems(cohort / "clinic")
    corrupt = clinic[clinic["image"].str.endswith("scan broken.jpg")]
    assert list(corrupt["problem"]) == ["unreadable_image"]
    utk = _problems(cohort / "utkface")
    assert tree["malformed"] in " ".join(utk[utk["problem"] == "bad_utkface_name"]["image"])

    manifest = pd.read_csv(cohort / "cohort" / "manifest.csv", dtype=str, keep_default_na=False)
    images = set(manifest["image"])
    assert not any("scan broken" in image or ".DS_Store" in image or tree["malformed"] in image for image in images)
    assert any(image.endswith("FRONT.JPG") for image in images)
    assert any(image.endswith("visit 2 side.jpg") for image in images)
    # The Chinese folder name maps to Down syndrome, subject folders name the person, UTKFace adds controls.
    assert set(manifest["label"]) == {"Williams syndrome", "Down syndrome", "healthy control"}
    assert {"WS-001", "DS-002", "HC-003"} <= set(manifest["subject_id"])
    assert (manifest["source"] == "UTKFace").sum() == 4


def test_formats_reach_training_upright(real_run):
    from wgsy_lib.images import load_image

    rows = [json.loads(line) for split in ("train", "val", "test")
            for line in (real_run["cohort"] / "data" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    # 8 WS + 8 DS (one corrupt file excluded earlier, not counted) + 8 controls + 4 UTKFace.
    assert len(rows) == 28
    for row in rows:
        loaded = load_image(row["image"]).image
        assert loaded.mode == "RGB"
        assert loaded.size == (160, 160), f"{row['image']} is not upright ({loaded.size})"


def test_legacy_annotations_stay_in_train(real_run):
    cohort = real_run["cohort"]
    records = [json.loads(line) for line in
               (cohort / "legacy" / "legacy_annotations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == real_run["tree"]["legacy_count"]
    assert {record["mode"] for record in records} == {"label_conditioned"}
    legacy_hashes = {record["image_sha256"] for record in records}
    legacy_problems = _problems(cohort / "legacy")
    assert "path_remapped" in set(legacy_problems["problem"])

    by_split = {split: [json.loads(line) for line in
                        (cohort / "data" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
                for split in ("train", "val", "test")}
    held_out = by_split["val"] + by_split["test"]
    # The guard matters: photos with legacy annotations are in validation and test ...
    assert any(row["image_sha256"] in legacy_hashes for row in held_out)
    # ... and no instruction or response of theirs came from a label-conditioned annotation.
    assert all("label_conditioned" not in row["feature_source"] for row in held_out)
    # Train examples without a blind annotation took their answer from the legacy file.
    assert any("label_conditioned" in row["feature_source"] for row in by_split["train"])

    # docs/real_data.md asks the user to read the data card before training.
    assert (cohort / "data" / "data_card.md").is_file()


def test_evaluation_writes_selection(real_run):
    cohort = real_run["cohort"]
    evaluate = cohort / "evaluate"
    comparison = pd.read_csv(evaluate / "comparison.csv")
    assert {"base", "r4-lora_dropout0.1"} <= set(comparison["model"])
    selection = json.loads((evaluate / "selection.json").read_text(encoding="utf-8"))
    assert selection["selected"] in set(comparison["model"])
    assert (evaluate / "04_evaluate.html").is_file()
    leaderboard = pd.read_csv(cohort / "grid" / "leaderboard.csv")
    assert len(leaderboard) == 1
