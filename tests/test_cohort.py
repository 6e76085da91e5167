"""Cohort importers and validation, on small photo trees the tests build themselves."""

import json
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wgsy_lib.annotation_store import AnnotationStore
from wgsy_lib.cohort import (import_folders, import_legacy, import_utkface, map_features, merge_manifests,
                             validate_cohort)
from wgsy_lib.cohort_import import parse_utkface_name
from wgsy_lib.cohort_legacy import parse_raw_json
from wgsy_lib.errors import DataError
from wgsy_lib.features import load_features

WILLIAMS, DOWN, GOLDENHAR, CONTROL = "Williams syndrome", "Down syndrome", "Goldenhar syndrome", "healthy control"


def _photo(path, seed=0, mode="RGB", size=(32, 24), image_format=None):
    """Write a small image whose pixels depend on `seed`, so different seeds never hash alike."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), mode="RGB")
    if mode == "I;16":
        image = Image.fromarray((np.asarray(image.convert("L"), dtype=np.uint16) * 256))
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=image_format)
    return path


@pytest.fixture
def clinic_tree(tmp_path):
    """A folder-per-class tree with the oddities real exports have."""
    root = tmp_path / "clinic"
    _photo(root / "Williams syndrome" / "P001" / "front view.JPG", 1)
    _photo(root / "Williams syndrome" / "P001" / "visit 2" / "side.jpeg", 2)
    _photo(root / "Williams syndrome" / "P002" / "张伟.png", 3, mode="P")
    _photo(root / "WS" / "P003" / "a.webp", 4, image_format="WEBP")
    _photo(root / "唐氏综合征" / "王芳_1.jpg", 5, mode="CMYK")
    _photo(root / "唐氏综合征" / "王芳_2.bmp", 6, mode="L", image_format="BMP")
    _photo(root / "Goldenhar" / "G1.tif", 7, mode="I;16", image_format="TIFF")
    _photo(root / "Goldenhar" / "G2.png", 8, mode="LA")
    _photo(root / "controls" / "c1.png", 9, mode="RGBA")
    (root / "controls" / "notes.txt").write_text("consent forms in the office")
    (root / "controls" / ".DS_Store").write_bytes(b"\x00\x00")
    (root / "controls" / "._c1.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "controls" / "Thumbs.db").write_bytes(b"\x00")
    _photo(root / "__MACOSX" / "controls" / "c1.png", 9)
    _photo(root / "misc photos" / "x.jpg", 10)
    _photo(root / "loose.jpg", 11)
    return root


def _problems(result_or_frame, code):
    frame = result_or_frame if isinstance(result_or_frame, pd.DataFrame) else result_or_frame.problem_frame()
    return frame[frame["problem"] == code]


# --- folder per class ---------------------------------------------------------------------------

def test_folders_import_labels_and_paths(clinic_tree, labels):
    result = import_folders(clinic_tree, labels)
    frame = result.frame.set_index("image")
    assert frame.loc["Williams syndrome/P001/front view.JPG", "label"] == WILLIAMS
    assert frame.loc["WS/P003/a.webp", "label"] == WILLIAMS
    assert frame.loc["WS/P003/a.webp", "label_raw"] == "WS"
    assert frame.loc["唐氏综合征/王芳_1.jpg", "label"] == DOWN
    assert frame.loc["Goldenhar/G1.tif", "label"] == GOLDENHAR
    assert frame.loc["controls/c1.png", "label"] == CONTROL
    assert frame.loc["controls/c1.png", "source"] == "clinic"
    assert all("\\" not in image and not image.startswith("/") for image in result.frame["image"])
    assert result.data_root == clinic_tree.resolve()


def test_folders_subject_from_subject_folder(clinic_tree, labels):
    frame = import_folders(clinic_tree, labels).frame.set_index("image")
    assert frame.loc["Williams syndrome/P001/front view.JPG", "subject_id"] == "P001"
    # Deeper folders belong to the subject folder above them.
    assert frame.loc["Williams syndrome/P001/visit 2/side.jpeg", "subject_id"] == "P001"
    assert frame.loc["Williams syndrome/P002/张伟.png", "subject_id"] == "P002"


def test_folders_without_subjects_warn(clinic_tree, labels, caplog):
    with caplog.at_level("WARNING", logger="wgsy_lib"):
        frame = import_folders(clinic_tree, labels).frame.set_index("image")
    assert frame.loc["唐氏综合征/王芳_1.jpg", "subject_id"] != frame.loc["唐氏综合征/王芳_2.bmp", "subject_id"]
    assert "each counts as its own subject" in caplog.text


def test_folders_subject_pattern_groups_photos(clinic_tree, labels):
    result = import_folders(clinic_tree, labels, subject_pattern=r"^(?P<subject>[^_]+)_")
    frame = result.frame.set_index("image")
    assert frame.loc["唐氏综合征/王芳_1.jpg", "subject_id"] == "王芳"
    assert frame.loc["唐氏综合征/王芳_2.bmp", "subject_id"] == "王芳"
    # Subject folders still win over the pattern.
    assert frame.loc["WS/P003/a.webp", "subject_id"] == "P003"
    mismatched = _problems(result, "subject_pattern_mismatch")
    assert set(mismatched["image"]) == {"Goldenhar/G1.tif", "Goldenhar/G2.png", "controls/c1.png"}
    assert "does not match the file name 'G1'" in mismatched.iloc[0]["detail"]


def test_folders_unknown_class_folder_reported(clinic_tree, labels, caplog):
    with caplog.at_level("WARNING", logger="wgsy_lib"):
        result = import_folders(clinic_tree, labels)
    [row] = _problems(result, "unknown_class_folder").to_dict("records")
    assert row["image"] == "misc photos"
    assert "class folder 'misc photos' (1 files) maps to no class" in row["detail"]
    assert "add the name as a synonym in labels.yaml" in row["detail"]
    assert not result.frame["image"].str.startswith("misc photos").any()
    assert "misc photos maps to no class" in caplog.text


def test_folders_skip_system_files_and_report_others(clinic_tree, labels):
    result = import_folders(clinic_tree, labels)
    assert result.skipped_system_files == 3  # .DS_Store, ._c1.png, Thumbs.db
    assert not result.frame["image"].str.contains("__MACOSX|DS_Store|Thumbs|/\\._", regex=True).any()
    [not_image] = _problems(result, "not_an_image_file").to_dict("records")
    assert not_image["image"] == "controls/notes.txt"
    assert "extension '.txt'" in not_image["detail"]
    [loose] = _problems(result, "not_in_class_folder").to_dict("records")
    assert loose["image"] == "loose.jpg"


def test_folders_count(clinic_tree, labels):
    assert len(import_folders(clinic_tree, labels).frame) == 9


def test_folders_bad_subject_pattern(clinic_tree, labels):
    with pytest.raises(DataError, match="has no named group 'subject'"):
        import_folders(clinic_tree, labels, subject_pattern=r"^([^_]+)_")
    with pytest.raises(DataError, match="is not a valid regular expression"):
        import_folders(clinic_tree, labels, subject_pattern=r"^(?P<subject>[")


def test_folders_missing_root(tmp_path, labels):
    with pytest.raises(DataError, match="not found or not a folder"):
        import_folders(tmp_path / "absent", labels)


def test_folders_ambiguous_class_name_reported(tmp_path, labels):
    _photo(tmp_path / "root" / "Williams syndrome or Down syndrome" / "a.jpg")
    result = import_folders(tmp_path / "root", labels)
    assert "ambiguous" in _problems(result, "unknown_class_folder").iloc[0]["detail"]
    assert result.frame.empty


# --- UTKFace ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,expected", [
    ("25_1_2_20170116174525125.jpg.chip.jpg", {"age": 25, "sex": "female", "ethnicity": "Asian"}),
    ("25_1_2_20170116174525125.jpg", {"age": 25, "sex": "female", "ethnicity": "Asian"}),
    ("1_0_0_20161219140623097.jpg.chip.jpg", {"age": 1, "sex": "male", "ethnicity": "White"}),
    ("116_0_1_20170120134921760.JPG", {"age": 116, "sex": "male", "ethnicity": "Black"}),
    ("40_1_3_20170119153417612.jpg.chip.jpg", {"age": 40, "sex": "female", "ethnicity": "Indian"}),
    ("40_0_4_20170119153417612.jpg.chip.jpg", {"age": 40, "sex": "male", "ethnicity": "Others"}),
])
def test_utkface_name_parsed(name, expected):
    parsed = parse_utkface_name(name)
    assert {key: parsed[key] for key in expected} == expected


@pytest.mark.parametrize("name,reason", [
    ("39_1_20170116174525125.jpg.chip.jpg", "has 3 field(s)"),  # race missing, as in the real dataset
    ("61_3_20170109150557335.jpg.chip.jpg", "has 3 field(s)"),
    ("a_0_1_20170116174525125.jpg", "has 4 field(s)"),
    ("25_2_1_20170116174525125.jpg", "gender 2 is not 0 (male) or 1 (female)"),
    ("117_0_1_20170116174525125.jpg", "age 117 is above 116"),
    ("25_0_5_20170116174525125.jpg", "race 5 is not one of 0-4"),
    ("25_0_1_2017_extra.jpg", "has 5 field(s)"),
    ("25_0_1_.jpg", "has 4 field(s)"),
    ("IMG_1234.jpg", "has 2 field(s)"),
])
def test_utkface_bad_names_not_guessed(name, reason):
    parsed = parse_utkface_name(name)
    assert isinstance(parsed, str)
    assert reason in parsed
    assert repr(name) in parsed


def test_utkface_import(tmp_path):
    root = tmp_path / "UTKFace"
    _photo(root / "part1" / "25_1_2_20170116174525125.jpg.chip.jpg", 1)
    _photo(root / "part2" / "70_0_0_20170117174525125.jpg", 2)
    _photo(root / "39_1_20170116174525125.jpg.chip.jpg", 3)
    (root / ".DS_Store").write_bytes(b"x")
    (root / "README.md").write_text("utkface")
    result = import_utkface(root)
    frame = result.frame.set_index("image")
    row = frame.loc["part1/25_1_2_20170116174525125.jpg.chip.jpg"]
    assert row["label"] == CONTROL
    assert row["source"] == "UTKFace"
    assert row["subject_id"] == "utkface:25_1_2_20170116174525125"
    assert (row["age"], row["sex"], row["ethnicity"]) == (25, "female", "Asian")
    assert frame.loc["part2/70_0_0_20170117174525125.jpg", "sex"] == "male"
    assert _problems(result, "bad_utkface_name")["image"].tolist() == ["39_1_20170116174525125.jpg.chip.jpg"]
    assert _problems(result, "not_an_image_file")["image"].tolist() == ["README.md"]
    assert result.skipped_system_files == 1
    assert result.card["coding"]["gender"] == {0: "male", 1: "female"}


# --- legacy WGSY annotation files ---------------------------------------------------------------

@pytest.fixture
def legacy_tree(tmp_path):
    root = tmp_path / "data"
    for index, name in enumerate(["ws/a.jpg", "ws/b.jpg", "hc/c.jpg", "hc/d.jpg", "ds/e.jpg", "x/f.jpg", "x/g.jpg"]):
        _photo(root / name, 100 + index)
    records = [
        {"image": "ws/a.jpg", "label": 1, "parsed_annotation": {"Forehead": "broad forehead", "Periorbital fullness": "yes",
                                                                "eye_color": "blue", "explanation": "stellate iris"}},
        {"image": str(root / "ws" / "b.jpg"), "label": "1",
         "model_raw_text": "Here you go:\n```json\n{\"nasal_bridge\": \"flat\", \"philtrum_length\": \"long\"}\n```"},
        {"image": "hc/c.jpg", "label": 0, "model_raw_response": "I cannot describe this face."},
        {"image": "hc/d.jpg", "label": "healthy control",
         "annotation": {"facial_features": {"lip_fullness": "normal", "chin_size": "small or prominent"}}},
        {"image": "/old/machine/project/data/ds/e.jpg", "label": "Down syndrome", "age": 4, "sex": "F", "hospital": "A"},
        {"image": "/old/machine/elsewhere/zzz.jpg", "label": 0},
        {"image": "x/f.jpg", "label": "maybe syndromic", "age": "about 5"},
        {"image": "x/missing.jpg", "label": 0, "parsed_annotation": {"forehead": "broad"}},
        {"label": 1},
        {"image": "C:\\Users\\wgsy\\data\\x\\g.jpg", "label": "yes"},
        {"image": "x\\g.jpg", "label": "no"},
    ]
    path = tmp_path / "train_ws_features.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path, root


def test_legacy_labels_and_paths(legacy_tree, labels):
    path, root = legacy_tree
    result = import_legacy(path, root, labels)
    frame = result.frame.set_index("image")
    assert frame.loc["ws/a.jpg", "label"] == WILLIAMS
    assert frame.loc["ws/b.jpg", "label"] == WILLIAMS  # absolute path inside the data root
    assert frame.loc["hc/c.jpg", "label"] == CONTROL
    assert frame.loc["hc/d.jpg", "label"] == CONTROL
    assert frame.loc["ds/e.jpg", "label"] == DOWN
    assert frame.loc["ds/e.jpg", "age"] == 4
    assert frame.loc["ds/e.jpg", "sex"] == "female"
    assert frame.loc["ds/e.jpg", "hospital"] == "A"
    assert frame.loc["x/f.jpg", "label"] == "Unknown"
    assert frame.loc["x/f.jpg", "label_raw"] == "maybe syndromic"
    assert frame.loc["ws/a.jpg", "subject_id"] == "legacy:ws/a.jpg"
    # Windows paths: an absolute one found by its tail, a relative one with backslashes.
    windows_rows = result.frame[result.frame["image"] == "x/g.jpg"]
    assert windows_rows["label"].tolist() == [WILLIAMS, CONTROL]


def test_legacy_problems(legacy_tree, labels):
    path, root = legacy_tree
    result = import_legacy(path, root, labels)
    assert _problems(result, "path_remapped")["image"].tolist() == ["ds/e.jpg", "x/g.jpg"]
    assert _problems(result, "path_remapped")["action"].tolist() == ["kept", "kept"]
    [outside] = _problems(result, "outside_data_root").to_dict("records")
    assert "record 6" in outside["detail"]
    assert "/old/machine/elsewhere/zzz.jpg" in outside["detail"]
    assert "record 9 has no 'image' path" in _problems(result, "bad_legacy_record").iloc[0]["detail"]


def test_legacy_validation_flags_unknown_and_missing(legacy_tree, labels):
    path, root = legacy_tree
    result = import_legacy(path, root, labels)
    clean, problems = validate_cohort(result.frame, result.data_root, labels)
    assert _problems(problems, "unknown_label")["image"].tolist() == ["x/f.jpg"]
    assert "label 'Unknown' (raw 'maybe syndromic')" in _problems(problems, "unknown_label").iloc[0]["detail"]
    assert _problems(problems, "missing_file")["image"].tolist() == ["x/missing.jpg"]
    assert "age 'about 5' must be a number of years" in _problems(problems, "invalid_value").iloc[0]["detail"]
    assert len(clean) == 5


def test_legacy_annotations_kept(legacy_tree, labels, tmp_path):
    path, root = legacy_tree
    store_path = tmp_path / "out" / "legacy.jsonl"
    import_legacy(path, root, labels, annotations_out=store_path)
    records = {record.image: record for record in AnnotationStore(store_path).read()}
    assert set(records) == {"ws/a.jpg", "ws/b.jpg", "hc/c.jpg", "hc/d.jpg"}
    for record in records.values():
        assert record.mode == "label_conditioned"
        assert record.backend == "legacy"
        assert record.model == "legacy:train_ws_features.json"
        assert record.prompt_version == "legacy"

    first = records["ws/a.jpg"]
    assert first.status == "ok"
    assert first.features["forehead"] == "broad"
    assert first.features["periorbital_fullness"] == "present"
    assert first.features["ear_shape"] == "uncertain"
    assert first.out_of_schema == ["eye_color=blue"]
    assert first.explanation == "stellate iris"

    fenced = records["ws/b.jpg"]
    assert fenced.status == "ok"
    assert fenced.features["nasal_bridge"] == "flat"
    assert "```json" in fenced.raw_text

    refused = records["hc/c.jpg"]
    assert refused.status == "invalid"
    assert refused.raw_text == "I cannot describe this face."
    assert refused.features is None

    nested = records["hc/d.jpg"]
    assert nested.features["lip_fullness"] == "typical"
    assert nested.features["chin_size"] == "uncertain"
    assert nested.out_of_schema == ["chin_size=small or prominent"]


def test_legacy_annotation_of_missing_image_counted(legacy_tree, labels, tmp_path, caplog):
    path, root = legacy_tree
    with caplog.at_level("WARNING", logger="wgsy_lib"):
        import_legacy(path, root, labels, annotations_out=tmp_path / "a.jsonl")
    assert "1 annotations in" in caplog.text
    assert "not kept because their image is missing" in caplog.text


def test_legacy_rerun_does_not_duplicate_annotations(legacy_tree, labels, tmp_path):
    path, root = legacy_tree
    store_path = tmp_path / "legacy.jsonl"
    import_legacy(path, root, labels, annotations_out=store_path)
    import_legacy(path, root, labels, annotations_out=store_path)
    assert len(AnnotationStore(store_path).read()) == 4


@pytest.mark.parametrize("content,expected", [
    ("{not json", "is not valid UTF-8 JSON"),
    ('{"image": "a.jpg"}', "must hold a JSON list of records, not dict"),
])
def test_legacy_bad_file(tmp_path, labels, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=expected):
        import_legacy(path, tmp_path, labels)


def test_legacy_missing_file(tmp_path, labels):
    with pytest.raises(DataError, match="legacy annotation file .* not found"):
        import_legacy(tmp_path / "none.json", tmp_path, labels)


@pytest.mark.parametrize("value,expected", [
    ({"Eye Spacing": "wide"}, "wide"),
    ({"eye-spacing": "Wide-set eyes? No: close"}, "uncertain"),
    ({"eye_spacing": "normal"}, "typical"),
    ({"eye_spacing": "unclear"}, "uncertain"),
    ({"eye_spacing": "close"}, "close"),
])
def test_map_features_eye_spacing(value, expected):
    features, _ = map_features(value, load_features())
    assert features["eye_spacing"] == expected


def test_map_features_booleans_and_not_visible():
    features, out = map_features({"ptosis": True, "facial_asymmetry": False, "ear_position": "not visible",
                                  "mouth_shape": "open with protruding tongue"}, load_features())
    assert features["ptosis"] == "present"
    assert features["facial_asymmetry"] == "typical"
    assert features["ear_position"] == "not_visible"
    assert features["mouth_shape"] == "open_with_protruding_tongue"
    assert out == []


def test_map_features_not_a_mapping():
    features, out = map_features(["broad"], load_features())
    assert set(features.values()) == {"uncertain"}
    assert out == ["(not a mapping: ['broad'])"]


@pytest.mark.parametrize("text,expected", [
    ('{"a": 1}', {"a": 1}),
    ('```json\n{"a": 1}\n```', {"a": 1}),
    ('Sure! The features are {"a": {"b": 2}} as requested.', {"a": {"b": 2}}),
    ('```\n{"a": "x`y"}\n```', {"a": "x`y"}),
    ("no json at all", None),
])
def test_parse_raw_json(text, expected):
    assert parse_raw_json(text) == expected


# --- validation ---------------------------------------------------------------------------------

def _manifest(rows):
    base = {"label_raw": "", "source": "test", "age": None, "sex": "", "ethnicity": "", "split": ""}
    return pd.DataFrame([{**base, **row} for row in rows])


@pytest.fixture
def messy_cohort(tmp_path):
    root = tmp_path / "photos"
    _photo(root / "a.jpg", 1)
    _photo(root / "a copy.jpg", 1)  # same bytes as a.jpg
    _photo(root / "b.jpg", 2)
    _photo(root / "c.jpg", 3)
    _photo(root / "d.jpg", 4)
    broken = root / "broken.jpg"
    broken.write_bytes((root / "b.jpg").read_bytes()[:200])
    frame = _manifest([
        {"image": "a.jpg", "subject_id": "S1", "label": WILLIAMS},          # row 2
        {"image": "a copy.jpg", "subject_id": "S9", "label": WILLIAMS},     # row 3: duplicate under another id
        {"image": "b.jpg", "subject_id": "S2", "label": DOWN},              # row 4: conflicts with row 5
        {"image": "c.jpg", "subject_id": "S2", "label": CONTROL},           # row 5
        {"image": "missing.jpg", "subject_id": "S3", "label": CONTROL},     # row 6
        {"image": "broken.jpg", "subject_id": "S4", "label": CONTROL},      # row 7
        {"image": "d.jpg", "subject_id": "S5", "label": "Unknown"},         # row 8
    ])
    return frame, root


def test_validate_reports_every_problem_with_row(messy_cohort, labels):
    frame, root = messy_cohort
    clean, problems = validate_cohort(frame, root, labels)
    by_problem = {code: group for code, group in problems.groupby("problem")}
    assert by_problem["missing_file"]["row"].tolist() == [6]
    assert by_problem["unreadable_image"]["row"].tolist() == [7]
    assert "truncated or corrupt" in by_problem["unreadable_image"].iloc[0]["detail"]
    assert by_problem["unknown_label"]["row"].tolist() == [8]
    assert by_problem["conflicting_subject_label"]["row"].tolist() == [4, 5]
    assert "subject 'S2' has photos labelled Down syndrome and healthy control" in \
        by_problem["conflicting_subject_label"].iloc[0]["detail"]
    duplicates = by_problem["duplicate_image"].set_index("row")
    assert duplicates.loc[2, "action"] == "kept"
    assert duplicates.loc[3, "action"] == "excluded"
    assert "byte-identical copy of a.jpg (row 2)" in duplicates.loc[3, "detail"]
    assert "likely one person under two ids" in duplicates.loc[3, "detail"]
    assert clean["image"].tolist() == ["a.jpg"]


def test_validate_catches_jpeg_missing_its_tail(tmp_path, labels):
    # Validation decodes at reduced scale for speed; a file cut near its end must still fail.
    root = tmp_path / "p"
    rows, columns = np.mgrid[0:800, 0:600]
    pixels = np.stack([rows % 256, columns % 256, (rows + columns) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(root.mkdir() or root / "whole.jpg", quality=90)
    data = (root / "whole.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(data[: int(len(data) * 0.9)])
    frame = _manifest([{"image": "whole.jpg", "subject_id": "S1", "label": CONTROL},
                       {"image": "cut.jpg", "subject_id": "S2", "label": CONTROL}])
    clean, problems = validate_cohort(frame, root, labels)
    assert clean["image"].tolist() == ["whole.jpg"]
    assert problems["problem"].tolist() == ["unreadable_image"]
    assert "cut.jpg is truncated or corrupt" in problems.iloc[0]["detail"]


def test_validate_adds_sha256(messy_cohort, labels):
    frame, root = messy_cohort
    clean, _ = validate_cohort(frame, root, labels)
    assert len(clean.loc[0, "sha256"]) == 64


def test_validate_strict_raises_with_counts(messy_cohort, labels, tmp_path):
    frame, root = messy_cohort
    report = tmp_path / "report" / "problems.csv"
    with pytest.raises(DataError) as caught:
        validate_cohort(frame, root, labels, strict=True, report_path=report)
    message = str(caught.value)
    assert "strict mode stops on any problem" in message
    assert "1 missing_file" in message
    assert "2 conflicting_subject_label" in message
    assert str(report) in message
    assert len(pd.read_csv(report)) == 7


def test_validate_clean_cohort_passes_strict(clinic_tree, labels, tmp_path):
    result = import_folders(clinic_tree, labels)
    report = tmp_path / "problems.csv"
    clean, problems = validate_cohort(result.frame, result.data_root, labels, strict=True, report_path=report)
    # Every odd mode in the tree (P, CMYK, L, I;16, LA, RGBA, WEBP, TIFF) decodes.
    assert len(clean) == len(result.frame)
    assert problems.empty
    assert pd.read_csv(report).columns.tolist() == ["row", "image", "subject_id", "problem", "detail", "action"]


def test_validate_without_decoding(messy_cohort, labels):
    frame, root = messy_cohort
    _, problems = validate_cohort(frame, root, labels, check_images=False)
    assert "unreadable_image" not in set(problems["problem"])
    assert "missing_file" in set(problems["problem"])


def test_duplicate_keeps_copy_that_passed(tmp_path, labels):
    root = tmp_path / "p"
    _photo(root / "a.jpg", 1)
    _photo(root / "b.jpg", 1)
    frame = _manifest([{"image": "a.jpg", "subject_id": "S1", "label": "Unknown"},
                       {"image": "b.jpg", "subject_id": "S1", "label": CONTROL}])
    clean, _ = validate_cohort(frame, root, labels)
    assert clean["image"].tolist() == ["b.jpg"]


# --- merging ------------------------------------------------------------------------------------

def test_merge_rewrites_paths_under_common_root(tmp_path, labels):
    _photo(tmp_path / "data" / "clinic" / "WS" / "P1" / "a.jpg", 1)
    _photo(tmp_path / "data" / "web" / "UTKFace" / "25_1_2_20170116174525125.jpg", 1)
    clinic = import_folders(tmp_path / "data" / "clinic", labels)
    web = import_utkface(tmp_path / "data" / "web" / "UTKFace")
    merged, root = merge_manifests([(clinic.frame, clinic.data_root), (web.frame, web.data_root)])
    assert root == (tmp_path / "data").resolve()
    assert merged["image"].tolist() == ["clinic/WS/P1/a.jpg", "web/UTKFace/25_1_2_20170116174525125.jpg"]
    assert merged["source"].tolist() == ["clinic", "UTKFace"]
    _, problems = validate_cohort(merged, root, labels)
    assert "different labels" in _problems(problems, "duplicate_image").iloc[0]["detail"]


def test_merge_needs_parts():
    with pytest.raises(DataError, match="at least one manifest"):
        merge_manifests([])


# --- speed --------------------------------------------------------------------------------------

@pytest.mark.benchmark
def test_import_and_validate_500_photos(tmp_path, labels):
    """Time import + validation of 500 phone-sized JPEGs against hashing them alone."""
    from wgsy_lib.images import file_sha256

    root = tmp_path / "big"
    rows, columns = np.mgrid[0:1600, 0:1200]
    for index in range(500):
        folder = ["WS", "DS", "Goldenhar", "controls"][index % 4]
        # A smooth picture compresses like a photo (random noise would be several times larger).
        pixels = np.stack([(rows + index) % 256, (columns * 2) % 256, (rows + columns) % 256], axis=-1)
        pixels[:16, :16] = (index % 256, 128 * (index // 256), 0)  # makes every file unique
        path = root / folder / f"{folder}-S{index // 20:02d}" / f"{index}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8), mode="RGB").save(path, quality=90)
    start = time.perf_counter()
    for path in root.rglob("*.jpg"):
        file_sha256(path)
    baseline = time.perf_counter() - start

    start = time.perf_counter()
    result = import_folders(root, labels)
    clean, _ = validate_cohort(result.frame, result.data_root, labels)
    elapsed = time.perf_counter() - start
    assert len(clean) == 500
    print(f"\nimport+validate 500 photos (1200x1600 JPEG): {elapsed:.2f} s; hashing alone {baseline:.2f} s; "
          f"ratio {elapsed / baseline:.1f}")


def test_validate_finds_phantom_planted_duplicates(tmp_path, labels):
    from wgsy_lib.manifest import data_root_for, read_manifest
    from wgsy_lib.phantom import make_phantom_cohort

    cohort = make_phantom_cohort(tmp_path / "phantom", subjects_per_class=2, photos_per_subject=2, image_size=64,
                                 duplicate_rate=0.5, workers=1)
    frame = read_manifest(cohort.manifest)
    clean, problems = validate_cohort(frame, data_root_for(cohort.manifest), labels)
    exact = frame[frame["duplicate_kind"] == "exact"]
    assert len(exact) > 0
    excluded = set(problems.loc[problems["action"] == "excluded", "image"])
    assert set(exact["image"]) == excluded
    assert set(problems["problem"]) == {"duplicate_image"}
    assert problems["detail"].str.contains("likely one person under two ids").all()
    assert len(clean) == len(frame) - len(exact)


@pytest.mark.parametrize("values,expected", [
    ({"image": "../outside.jpg"}, "invalid_path"),
    ({"image": "/etc/hosts"}, "invalid_path"),
    ({"subject_id": " "}, "invalid_value"),
    ({"sex": "F"}, "invalid_value"),
    ({"age": "seven"}, "invalid_value"),
    ({"age": 150}, "invalid_value"),
    ({"split": "training"}, "invalid_value"),
])
def test_validate_rejects_values_manifest_reader_would(tmp_path, labels, values, expected):
    root = tmp_path / "p"
    _photo(root / "a.jpg", 1)
    frame = _manifest([{"image": "a.jpg", "subject_id": "S1", "label": CONTROL, **values}])
    clean, problems = validate_cohort(frame, root, labels)
    assert clean.empty
    assert problems["problem"].tolist() == [expected]
    assert problems["action"].tolist() == ["excluded"]


def test_validate_clean_manifest_reads_back(clinic_tree, labels, tmp_path):
    from wgsy_lib.manifest import read_manifest, write_manifest

    result = import_folders(clinic_tree, labels)
    clean, _ = validate_cohort(result.frame, result.data_root, labels)
    path = write_manifest(clean, tmp_path / "m.csv", data_root=result.data_root)
    assert len(read_manifest(path)) == len(clean)
