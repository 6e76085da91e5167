"""The append-only annotation store: records, keys and recovery from interrupted writes."""

import pytest

from wgsy_lib.annotation_store import AnnotationRecord, AnnotationStore, annotation_key
from wgsy_lib.errors import DataError


def _record(sha="a" * 64, status="ok", **extra):
    return AnnotationRecord(image_sha256=sha, image="x.jpg", backend="openai", model="m", prompt_version="v1",
                            mode="blind", status=status, **extra)


def test_round_trip(tmp_path):
    store = AnnotationStore(tmp_path / "a.jsonl")
    store.append(_record(features={"forehead": "broad"}))
    [record] = store.read()
    assert record.features == {"forehead": "broad"}
    assert record.key == annotation_key("a" * 64, "openai", "m", "v1", "blind")


def test_key_depends_on_mode():
    assert _record().key != AnnotationRecord(image_sha256="a" * 64, image="x.jpg", backend="openai", model="m",
                                             prompt_version="v1", mode="label_conditioned", status="ok").key


def test_latest_keeps_newest(tmp_path):
    store = AnnotationStore(tmp_path / "a.jsonl")
    store.append(_record(status="error"))
    store.append(_record(status="ok"))
    assert [record.status for record in store.latest().values()] == ["ok"]


def test_partial_last_line_ignored_on_read(tmp_path, caplog):
    path = tmp_path / "a.jsonl"
    store = AnnotationStore(path)
    store.append(_record())
    with open(path, "ab") as handle:
        handle.write(b'{"image_sha256": "bbb", "ima')
    with caplog.at_level("WARNING"):
        records = store.read()
    assert len(records) == 1
    assert "ignoring a partial last line" in caplog.text


def test_partial_last_line_cut_before_append(tmp_path, caplog):
    path = tmp_path / "a.jsonl"
    store = AnnotationStore(path)
    store.append(_record(sha="a" * 64))
    partial = b'{"image_sha256": "bbb", "ima'
    with open(path, "ab") as handle:
        handle.write(partial)
    with caplog.at_level("WARNING"):
        store.append(_record(sha="c" * 64))
    assert f"removed a partial last line ({len(partial)} bytes)" in caplog.text
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [record.image_sha256 for record in store.read()] == ["a" * 64, "c" * 64]


def test_partial_only_line_cut(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"image_sha256": ')
    store = AnnotationStore(path)
    store.append(_record())
    assert len(store.read()) == 1


def test_broken_middle_line_names_line(tmp_path):
    path = tmp_path / "a.jsonl"
    store = AnnotationStore(path)
    store.append(_record())
    with open(path, "ab") as handle:
        handle.write(b"not json\n")
    store.append(_record(sha="d" * 64))
    with pytest.raises(DataError, match=r"line 2: not a valid annotation record"):
        store.read()


@pytest.mark.parametrize("field,value,expected", [
    ("mode", "peek", "annotation mode 'peek' is invalid"),
    ("status", "fine", "annotation status 'fine' is invalid"),
])
def test_bad_mode_or_status(field, value, expected):
    values = dict(image_sha256="a", image="x", backend="b", model="m", prompt_version="v", mode="blind", status="ok")
    values[field] = value
    with pytest.raises(DataError, match=expected):
        AnnotationRecord(**values)
