"""The label-CSV rules and the join of files with label rows, without Beam."""

from __future__ import annotations

import pytest

from pcam_tfds.core import layout


@pytest.mark.parametrize(
    "line, reason, label",
    [
        ("abc,1", None, 1),
        ("abc, 0", None, 0),
        ("abc,2", layout.BAD_LABEL, -1),
        ("abc,yes", layout.BAD_LABEL, -1),
        ("abc,", layout.BAD_LABEL, -1),
        ("abc", layout.MALFORMED_ROW, -1),
        ("abc,1,extra", layout.MALFORMED_ROW, -1),
        ("", layout.MALFORMED_ROW, -1),
        (",1", layout.MALFORMED_ROW, -1),
        ("../x,1", layout.UNSAFE_ID, -1),
        ("a/b,0", layout.UNSAFE_ID, -1),
        (".hidden,0", layout.UNSAFE_ID, -1),
    ],
)
def test_parse_label_line(line, reason, label):
    row = layout.parse_label_line(line)
    assert (row["reason"], row["label"], row["raw"]) == (reason, label, line)


def test_file_id():
    assert layout.file_id("/d/train/abc.tif") == "abc"
    assert layout.file_id("gs://b/train/abc.def.png") == "abc.def"
    assert layout.file_id("/d/train/noext") == "noext"


def _file(source="train", valid=True, reason=None):
    return {"source": source, "valid": valid, "reason": reason, "detail": "", "label": -1}


def _row(label=1, reason=None):
    return {"id": "x", "label": label if reason is None else -1, "raw": f"x,{label}", "reason": reason}


def test_resolve_labels_a_file_with_one_row():
    files, rows = layout.resolve_id("x", [_file()], [_row(1)])
    assert [(f["valid"], f["label"]) for f in files] == [(True, 1)] and rows == []


@pytest.mark.parametrize(
    "files, rows, file_reasons, row_reasons",
    [
        ([_file()], [], [layout.MISSING_LABEL], []),
        ([], [_row()], [], [layout.MISSING_FILE]),
        ([_file()], [_row(2, layout.BAD_LABEL)], [layout.BAD_LABEL], [layout.BAD_LABEL]),
        ([_file()], [_row(1), _row(0)], [layout.DUPLICATE_ID], [layout.DUPLICATE_ID] * 2),
        ([_file(), _file()], [_row(1)], [layout.DUPLICATE_ID] * 2, [layout.DUPLICATE_ID]),
        ([_file(), _file("test")], [_row(1)], [layout.DUPLICATE_ID] * 2, [layout.DUPLICATE_ID]),
        ([_file("test")], [_row(1)], [None], [layout.LABELLED_TEST_FILE]),
        ([_file(valid=False, reason="truncated")], [_row(1)], ["truncated"], []),
        ([_file(valid=False, reason="truncated")], [], ["truncated"], []),
    ],
    ids=[
        "no-row",
        "no-file",
        "bad-label",
        "two-rows",
        "two-files",
        "train-and-test",
        "labelled-test",
        "bad-file",
        "bad-file-no-row",
    ],
)
def test_resolve_rejects_with_the_right_reason(files, rows, file_reasons, row_reasons):
    out_files, bad_rows = layout.resolve_id("x", files, rows)
    assert [f["reason"] for f in out_files] == file_reasons
    assert [r["reason"] for r in bad_rows] == row_reasons
    # Every input comes back exactly once.
    assert len(out_files) == len(files)
    assert len(bad_rows) + sum(f["label"] != -1 for f in out_files if f["source"] == "train") == len(rows)


@pytest.mark.parametrize("header", ["id,label", '"id","label"', "\ufeffid, label", " id , label "])
def test_labels_header_may_be_quoted_or_spaced(tmp_path, header):
    path = tmp_path / "train_labels.csv"
    path.write_text(header + "\nabc,1\n", encoding="utf-8")
    layout.check_labels_header(str(path))


def test_a_wrong_labels_header_is_named(tmp_path):
    path = tmp_path / "train_labels.csv"
    path.write_text('"image","target"\n')
    with pytest.raises(ValueError, match="header is"):
        layout.check_labels_header(str(path))


@pytest.mark.parametrize(
    "files, rows",
    [
        ([_file()], [_row(1)]),
        ([_file("test")], []),
        ([_file(valid=False, reason="truncated")], [_row(0)]),
        ([_file()], [_row(2, layout.BAD_LABEL)]),
        ([_file("test")], [_row(1)]),
        ([_file()], []),
        ([_file(), _file("test")], [_row(1)]),
    ],
)
def test_join_labels_joins_each_id_as_resolve_id(files, rows):
    # records.join_labels takes a shorter path for the two common shapes (one train file and its good row,
    # one test file and no row); the result must be resolve_id's.
    from pcam_tfds.core import records

    files = [dict(f, id="x") for f in files]
    assert records.join_labels(files, rows) == layout.resolve_id("x", files, rows)
