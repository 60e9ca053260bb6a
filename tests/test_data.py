import pytest

from course_utils.data import DataError, load_dataset_file, load_sample, read_jsonl, write_jsonl


def test_round_trip(tmp_path):
    rows = [{"b": 1, "a": "x"}, {"a": "ü", "b": 2}]
    path = write_jsonl(tmp_path / "f.jsonl", rows)
    assert read_jsonl(path) == rows
    assert load_dataset_file(path).num_rows == 2


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3\n')
    with pytest.raises(DataError, match=r"bad\.jsonl line 3: malformed JSON"):
        read_jsonl(path)


def test_incomplete_line_names_missing_field(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n{"question": "q2"}\n')
    with pytest.raises(DataError, match=r"qa\.jsonl line 2: missing field\(s\) 'answer'"):
        read_jsonl(path, required=["question", "answer"])


def test_non_object_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('[1, 2]\n')
    with pytest.raises(DataError, match="line 1: expected a JSON object"):
        read_jsonl(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        read_jsonl(tmp_path / "empty.jsonl")


def test_load_sample_split():
    rows = load_sample("qa.jsonl", required=["question", "answer"], split="heldout")
    assert rows and all(r["split"] == "heldout" for r in rows)
    with pytest.raises(DataError, match="no rows with split"):
        load_sample("qa.jsonl", split="nonsense")


@pytest.mark.parametrize("content, message", [
    (b'{"a": 1}\n{"a": "caf\xe9"}\n', r"x\.jsonl line 2: byte 0xe9 at column 11 is not UTF-8"),
    ('{"a": 1}\n'.encode("utf-16"), r"x\.jsonl line 1: the file is UTF-16"),
    ('{"a": 1}\n'.encode("utf-16-le"), r"x\.jsonl line 1: it contains NUL bytes"),
    (b'{"a": 1}\n{"a": 1, "a": 2}\n', r"x\.jsonl line 2: duplicate key 'a'"),
    (b'{"a": {"b": 1, "b": 1}}\n', r"x\.jsonl line 1: duplicate key 'b'"),
    (b'{"a": NaN}\n', r"x\.jsonl line 1: NaN is not valid JSON"),
    (b'{"a": [-Infinity]}\n', r"x\.jsonl line 1: -Infinity is not valid JSON"),
    (b'{"a": 1e999}\n', r"x\.jsonl line 1: the number 1e999 is too large"),
])
def test_encodings_duplicate_keys_and_nan_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_jsonl(path)


def test_write_jsonl_refuses_nan(tmp_path):
    with pytest.raises(DataError, match="row 0 cannot be written as JSON"):
        write_jsonl(tmp_path / "x.jsonl", [{"a": float("nan")}])
