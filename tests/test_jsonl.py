"""The shared reader of 02_convert's JSONL files: blank lines skipped, bad lines named."""

import pytest

from wgsy_lib.errors import DataError
from wgsy_lib.jsonl import iter_json_lines


def test_reads_objects_with_line_numbers(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text('{"label": "a"}\n\n{"label": "b"}\n', encoding="utf-8")
    assert list(iter_json_lines(path)) == [(1, {"label": "a"}), (3, {"label": "b"})]


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text('{"label": "a"}\n{"label": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"val.jsonl line 2 is not valid JSON .*regenerate the file with 02_convert"):
        list(iter_json_lines(path))


def test_non_object_line_rejected(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text('["a", "b"]\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 1 is a JSON list, expected one object per line"):
        list(iter_json_lines(path))


def test_non_utf8_file_rejected(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_bytes(b'{"label": "\xff"}\n')
    with pytest.raises(DataError, match="is not UTF-8 text"):
        list(iter_json_lines(path))
