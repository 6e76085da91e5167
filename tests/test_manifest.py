"""The manifest format: reading, writing, the data root, and row-level messages."""

import json

import pandas as pd
import pytest

from wgsy_lib.errors import DataError
from wgsy_lib.manifest import MANIFEST_COLUMNS, data_root_for, read_manifest, write_manifest

HEADER = ",".join(MANIFEST_COLUMNS)


def _write(tmp_path, text, name="manifest.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_round_trip_keeps_free_columns(tmp_path):
    frame = pd.DataFrame([
        {"image": "WS/P1/a.jpg", "subject_id": "P1", "label": "Williams syndrome", "age": 7.0, "sex": "female",
         "hospital": "A"},
        {"image": "HC/b 2.jpg", "subject_id": "张三", "label": "healthy control", "age": None, "sex": "", "hospital": "B"},
    ])
    path = write_manifest(frame, tmp_path / "out" / "manifest.csv", data_root=tmp_path)
    read = read_manifest(path)
    assert list(read.columns) == MANIFEST_COLUMNS + ["hospital"]
    assert read.loc[0, "age"] == 7
    assert pd.isna(read.loc[1, "age"])
    assert read.loc[1, "subject_id"] == "张三"
    assert read.loc[1, "hospital"] == "B"
    assert "7," in path.read_text(encoding="utf-8")  # ages written without a trailing .0


def test_minimal_columns_are_filled(tmp_path):
    path = _write(tmp_path, "image,subject_id,label\na.jpg,s1,healthy control\n")
    frame = read_manifest(path)
    assert list(frame.columns) == MANIFEST_COLUMNS
    assert frame.loc[0, "sex"] == ""


def test_missing_required_column(tmp_path):
    path = _write(tmp_path, "image,label\na.jpg,healthy control\n")
    with pytest.raises(DataError) as caught:
        read_manifest(path)
    assert "['subject_id']" in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_manifest_file(tmp_path):
    with pytest.raises(DataError, match="not found; build one with `wgsy import`"):
        read_manifest(tmp_path / "none.csv")


@pytest.mark.parametrize("row,expected", [
    (",s1,healthy control,,,,,,", "row 2: empty image path"),
    ("/abs/a.jpg,s1,healthy control,,,,,,", "must be relative to the data root"),
    ("../a.jpg,s1,healthy control,,,,,,", "must be relative to the data root and stay inside it"),
    ("a.jpg,,healthy control,,,,,,", "row 2 (a.jpg): empty subject_id"),
    ("a.jpg,s1,healthy control,,,,F,,", "sex 'F' must be one of female, male or empty"),
    ("a.jpg,s1,healthy control,,,,,,training", "split 'training' must be one of train, val, test or empty"),
    ("a.jpg,s1,healthy control,,,seven,,,", "age 'seven' is not a number of years"),
    ("a.jpg,s1,healthy control,,,150,,,", "age 150.0 is outside 0-120 years"),
])
def test_bad_values_name_row(tmp_path, row, expected):
    path = _write(tmp_path, f"{HEADER}\n{row}\n")
    with pytest.raises(DataError) as caught:
        read_manifest(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(f"{HEADER}\n".encode() + "é.jpg,s,healthy control,,,,,,\n".encode("latin-1"))
    with pytest.raises(DataError, match="not a readable UTF-8 CSV"):
        read_manifest(path)


def test_data_root_order(tmp_path):
    manifest = _write(tmp_path, f"{HEADER}\n")
    assert data_root_for(manifest) == tmp_path.resolve()
    (tmp_path / "cohort.json").write_text(json.dumps({"data_root": "/data/photos"}))
    assert str(data_root_for(manifest)) == "/data/photos"
    assert data_root_for(manifest, tmp_path / "other") == (tmp_path / "other").resolve()


def test_broken_cohort_card(tmp_path):
    manifest = _write(tmp_path, f"{HEADER}\n")
    (tmp_path / "cohort.json").write_text("{broken")
    with pytest.raises(DataError, match="cohort card .* is not valid JSON"):
        data_root_for(manifest)


def test_write_logs_paths(tmp_path, caplog):
    frame = pd.DataFrame([{"image": "a.jpg", "subject_id": "s", "label": "healthy control"}])
    with caplog.at_level("INFO", logger="wgsy_lib"):
        write_manifest(frame, tmp_path / "m.csv", data_root=tmp_path, card={"importer": "test"})
    assert f"wrote cohort manifest (1 photos): {tmp_path / 'm.csv'}" in caplog.text
    assert f"wrote cohort card: {tmp_path / 'cohort.json'}" in caplog.text
    card = json.loads((tmp_path / "cohort.json").read_text())
    assert card == {"importer": "test", "data_root": str(tmp_path.resolve())}


def test_write_keeps_non_numeric_age_for_reader_to_report(tmp_path):
    frame = pd.DataFrame([{"image": "a.jpg", "subject_id": "s", "label": "healthy control", "age": "4 years"}])
    path = write_manifest(frame, tmp_path / "m.csv")
    with pytest.raises(DataError, match="row 2 \\(a.jpg\\): age '4 years' is not a number of years"):
        read_manifest(path)
