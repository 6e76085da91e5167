"""The `wgsy import` and `wgsy validate` commands, run in-process on small trees."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wgsy_lib.cli import main
from wgsy_lib.manifest import read_manifest


def _photo(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels, mode="RGB").save(path)


@pytest.fixture
def clinic(tmp_path):
    root = tmp_path / "clinic"
    _photo(root / "WS" / "P1" / "a.jpg", 1)
    _photo(root / "WS" / "P1" / "b.jpg", 2)
    _photo(root / "Down syndrome" / "P2" / "c.png", 3)
    _photo(root / "controls" / "P3" / "d.jpg", 1)  # same bytes as WS/P1/a.jpg
    (root / "controls" / "P3" / "broken.jpg").write_text("not a photo")
    (root / "controls" / ".DS_Store").write_bytes(b"x")
    _photo(root / "other" / "e.jpg", 4)
    return root


def test_import_folders_writes_all_files(clinic, tmp_path, capsys):
    out = tmp_path / "cohorts" / "clinic" / "manifest.csv"
    assert main(["import", "folders", str(clinic), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"manifest: {out} (3 photos, 2 subjects)" in printed
    assert "1 unknown_class_folder" in printed
    assert "skipped 1 hidden or system files" in printed

    manifest = read_manifest(out)
    assert manifest["image"].tolist() == ["Down syndrome/P2/c.png", "WS/P1/a.jpg", "WS/P1/b.jpg"]
    assert "sha256" in manifest.columns
    card = json.loads((out.parent / "cohort.json").read_text())
    assert card["data_root"] == str(clinic.resolve())
    assert card["importer"] == "folders"
    imported = read_manifest(out.parent / "imported.csv")
    assert len(imported) == 5
    problems = pd.read_csv(out.parent / "problems.csv")
    assert set(problems["problem"]) == {"unknown_class_folder", "unreadable_image", "duplicate_image"}
    # Row numbers point at lines of imported.csv (header = line 1).
    broken = problems[problems["problem"] == "unreadable_image"].iloc[0]
    assert imported.loc[int(broken["row"]) - 2, "image"] == broken["image"] == "controls/P3/broken.jpg"


def test_import_strict_fails_with_report(clinic, tmp_path, capsys):
    out = tmp_path / "strict" / "manifest.csv"
    assert main(["import", "folders", str(clinic), "--out", str(out), "--strict"]) == 2
    error = capsys.readouterr().err
    assert "wgsy import: error: import of folders: strict mode stops on any problem" in error
    assert str(out.parent / "problems.csv") in error
    assert not out.exists()
    assert (out.parent / "problems.csv").exists()


def test_import_missing_root(tmp_path, capsys):
    assert main(["import", "folders", str(tmp_path / "none"), "--out", str(tmp_path / "m.csv")]) == 2
    assert "not found or not a folder" in capsys.readouterr().err


def test_import_utkface_and_merge(clinic, tmp_path, capsys):
    utk = tmp_path / "UTKFace"
    _photo(utk / "25_1_2_20170116174525125.jpg.chip.jpg", 10)
    _photo(utk / "39_1_20170116174525125.jpg.chip.jpg", 11)
    clinic_out = tmp_path / "cohorts" / "clinic" / "manifest.csv"
    utk_out = tmp_path / "cohorts" / "utk" / "manifest.csv"
    merged_out = tmp_path / "cohorts" / "all" / "manifest.csv"
    assert main(["import", "folders", str(clinic), "--out", str(clinic_out)]) == 0
    assert main(["import", "utkface", str(utk), "--out", str(utk_out)]) == 0
    assert "1 bad_utkface_name" in capsys.readouterr().out
    assert main(["import", "merge", str(clinic_out), str(utk_out), "--out", str(merged_out)]) == 0

    merged = read_manifest(merged_out)
    assert json.loads((merged_out.parent / "cohort.json").read_text())["data_root"] == str(tmp_path.resolve())
    assert "UTKFace/25_1_2_20170116174525125.jpg.chip.jpg" in merged["image"].tolist()
    assert "clinic/WS/P1/a.jpg" in merged["image"].tolist()
    assert len(merged) == 4


def test_import_legacy_keeps_annotations(tmp_path, capsys):
    root = tmp_path / "data"
    _photo(root / "a.jpg", 1)
    legacy = tmp_path / "train_ws_features.json"
    legacy.write_text(json.dumps([{"image": "a.jpg", "label": 1, "parsed_annotation": {"forehead": "broad"}}]))
    out = tmp_path / "cohorts" / "legacy" / "manifest.csv"
    assert main(["import", "legacy", str(legacy), "--data-root", str(root), "--out", str(out)]) == 0
    assert read_manifest(out)["label"].tolist() == ["Williams syndrome"]
    [line] = (out.parent / "legacy_annotations.jsonl").read_text().splitlines()
    assert json.loads(line)["mode"] == "label_conditioned"


def test_validate_command(clinic, tmp_path, capsys):
    manifest = tmp_path / "m" / "manifest.csv"
    main(["import", "folders", str(clinic), "--out", str(manifest)])
    capsys.readouterr()
    (clinic / "WS" / "P1" / "b.jpg").unlink()
    clean = tmp_path / "m" / "clean.csv"
    assert main(["validate", str(manifest), "--out", str(clean)]) == 0
    printed = capsys.readouterr().out
    assert "3 rows checked, 2 passed; 1 missing_file" in printed
    report = pd.read_csv(tmp_path / "m" / "validation_problems.csv")
    assert report["image"].tolist() == ["WS/P1/b.jpg"]
    assert len(read_manifest(clean)) == 2
    assert main(["validate", str(manifest), "--strict"]) == 2
    assert "1 missing_file" in capsys.readouterr().err


def test_validate_bad_manifest_row(tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,subject_id,label,sex\na.jpg,s1,healthy control,F\n")
    assert main(["validate", str(manifest)]) == 2
    assert "row 2 (a.jpg): sex 'F' must be one of female, male or empty" in capsys.readouterr().err
