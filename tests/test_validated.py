"""Reusing a beam_jobs.validate run in the build (PCAM_VALIDATION_DIR): same dataset, stale folders refused."""

from __future__ import annotations

import os
import shutil

import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions
from kaggle_folders import make_with_problems, parse_record, read_labels, write_labels

from beam_jobs import validate
from pcam_tfds import local_steps
from pcam_tfds.core import outputs, patches, validated
from pcam_tfds.pcam.pcam_dataset_builder import Builder

SPLIT_ARGS = {"validation_fraction": 0.2, "sample_fraction": 1.0, "seed": 42}


@pytest.fixture()
def checked(tmp_path):
    """(folder with every injected problem, its validation folder, the expected summary)."""
    folder = tmp_path / "d"
    expected = make_with_problems(folder)
    validate.run([f"--manual_dir={folder}", f"--output_dir={tmp_path / 'checks'}", "--direct_running_mode=in_memory"])
    return folder, tmp_path / "checks", expected


def _members(generators) -> dict[str, list[tuple[str, int]]]:
    # Sorted: the order examples reach TFDS' writer does not matter, it orders them by a hash of the key.
    return {name: sorted((key, parse_record(ex)["label"]) for key, ex in gen) for name, gen in generators.items()}


def test_reuse_gives_the_splits_of_a_fresh_validation_and_copies_its_outputs(checked, tmp_path):
    folder, checks, expected = checked
    counts = {}
    reused = _members(
        local_steps.split_generators(
            str(folder), str(tmp_path / "a"), counts=counts, validation_dir=str(checks), **SPLIT_ARGS
        )
    )
    fresh = _members(local_steps.split_generators(str(folder), str(tmp_path / "b"), **SPLIT_ARGS))
    assert reused == fresh
    assert sum(len(v) for v in reused.values()) == expected["valid"]
    assert counts["train"] + counts["validation"] == expected["by_source"]["train"]["valid"]
    for name in outputs.OUTPUT_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (checks / name).read_bytes(), name


def test_records_follow_the_folder_when_it_moves(checked, tmp_path):
    folder, checks, _ = checked
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)  # copytree keeps modification times
    records = validated.load_records(str(checks), str(moved))
    assert {os.path.dirname(r["path"]) for r in records} == {str(moved / "train"), str(moved / "test")}


def _stale_message(checks, folder) -> str:
    with pytest.raises(validated.StaleValidationError) as e:
        validated.load_records(str(checks), str(folder))
    return str(e.value)


def test_a_changed_labels_csv_is_refused(checked):
    folder, checks, _ = checked
    rows = read_labels(folder)
    rows[0][1] = "1" if rows[0][1] == "0" else "0"
    write_labels(folder, rows)
    assert "train_labels.csv changed" in _stale_message(checks, folder)


def test_added_gone_and_rewritten_files_are_named(checked):
    folder, checks, _ = checked
    train = sorted((folder / "train").glob("*.tif"))
    shutil.copy(train[0], folder / "test" / "newcomer.tif")
    train[1].unlink()
    st = train[2].stat()
    os.utime(train[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, rewritten later
    message = _stale_message(checks, folder)
    assert "1 files added since validation (test/newcomer.tif)" in message
    assert f"1 files gone since validation (train/{train[1].name})" in message
    assert f"changed since validation (size or modification time) (train/{train[2].name})" in message
    assert "python -m beam_jobs.validate" in message


def test_a_validation_without_inputs_json_is_not_reused(checked):
    folder, checks, _ = checked
    (checks / "inputs.json").unlink()
    with pytest.raises(FileNotFoundError, match="inputs.json missing"):
        validated.load_records(str(checks), str(folder))


def test_a_version_1_manifest_is_refused_in_one_line_naming_the_file_and_its_version(checked):
    folder, checks, _ = checked
    manifest = checks / outputs.MANIFEST
    table = pq.read_table(manifest)
    assert outputs.manifest_version(table.schema) == (2, "xxh3_128")  # Beam's writer keeps the metadata
    pq.write_table(table.replace_schema_metadata(None), manifest)  # what version 1 wrote: no version
    with pytest.raises(validated.ManifestVersionError) as e:
        validated.load_records(str(checks), str(folder))
    message = str(e.value)
    assert message.startswith(
        f"{manifest} is manifest version 1 (blake2b_128 pixel hashes); this build reads version 2"
    )
    assert "\n" not in message and f"--output_dir={checks}" in message


@pytest.mark.slow
@pytest.mark.parametrize("beam_args", [None, ["--direct_running_mode=in_memory"]], ids=["local", "beam"])
def test_tfds_build_reuses_the_validation_named_by_the_environment(checked, tmp_path, monkeypatch, beam_args):
    folder, checks, expected = checked
    monkeypatch.setenv(validated.ENV_VAR, str(checks))
    builder = Builder(data_dir=str(tmp_path / "tfds"), config="full")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(folder), beam_options=PipelineOptions(beam_args) if beam_args else None
        )
    )
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert sizes["train"] + sizes["validation"] == expected["by_source"]["train"]["valid"]
    assert sizes["test"] == expected["by_source"]["test"]["valid"]
    assert (builder.data_path / "validate" / "manifest.parquet").read_bytes() == (
        checks / "manifest.parquet"
    ).read_bytes()


def _rewrite_in_place(path, change: str) -> None:
    """Changes PATH's bytes, keeping its size and modification time: invisible to the listing check."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    if change == "pixels":  # one pixel's byte inverted: still a valid patch, with other pixels
        at = bytes(data).find(patches.read_patch(str(path)).tobytes())
        assert at >= 0, "expected the synthetic TIFF's pixels stored uncompressed"
        data[at] ^= 0xFF
    else:  # the TIFF signature overwritten: no longer an image
        data[:4] = b"XXXX"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


@pytest.mark.slow
@pytest.mark.parametrize("change", ["pixels", "undecodable"])
@pytest.mark.parametrize("beam_args", [None, ["--direct_running_mode=in_memory"]], ids=["local", "beam"])
def test_a_file_changed_in_place_with_size_and_mtime_kept_fails_the_build_naming_it(
    checked, tmp_path, monkeypatch, beam_args, change
):
    folder, checks, _ = checked
    rows = outputs.read_manifest(
        str(checks / outputs.MANIFEST), ["id", "source", "valid", "path", "pixel_hash"]
    ).to_pylist()
    row = min((r for r in rows if r["valid"] and r["source"] == "train"), key=lambda r: r["id"])
    path = folder / "train" / os.path.basename(row["path"])
    _rewrite_in_place(path, change)
    assert validated.compare(str(checks), str(folder))[1] == []  # the listing check cannot see it
    monkeypatch.setenv(validated.ENV_VAR, str(checks))
    builder = Builder(data_dir=str(tmp_path / "tfds"), config="full")
    with pytest.raises(Exception) as e:  # noqa: PT011 - the Beam runner wraps the error in its own
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=str(folder), beam_options=PipelineOptions(beam_args) if beam_args else None
            )
        )
    message = str(e.value)
    assert f"{path} (id {row['id']}) changed after it was validated" in message
    if change == "pixels":
        assert f"validation recorded {row['pixel_hash']}" in message
    else:
        assert "no longer decodes (not_an_image: unknown signature b'XXXX'" in message
    assert f"python -m beam_jobs.validate --manual_dir={folder}" in message and validated.ENV_VAR in message
    assert not builder.is_prepared()


def _manifest(path, rows=20_000):
    import pyarrow as pa

    ids = [f"{i:040x}" for i in range(rows)]
    pq.write_table(pa.table({"id": ids, "source": ["train"] * rows}), path, row_group_size=4_096)
    return ids


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
def test_manifest_readers_hand_pyarrow_no_python_object(tmp_path, monkeypatch, remote):
    # A Python file (or bytes) inside pyarrow is what aborted processes at exit: one of pyarrow's threads
    # released it while the interpreter was finalizing (status -6; bench/bench_manifest_exit.py). The readers
    # must give pyarrow a path (its own file) or a buffer it allocated, and read on one thread.
    import pyarrow as pa

    path = tmp_path / outputs.MANIFEST
    ids = _manifest(path)
    sources, real = [], pq.ParquetFile

    def recording(source, *args, **kwargs):
        sources.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", recording)
    if remote:  # a gs:// path: read through fileio (Beam's FileSystems on a cluster), here the local file
        monkeypatch.setattr(outputs.fileio, "is_remote", lambda p: True)
        monkeypatch.setattr(outputs.fileio, "read_bytes", lambda p: path.read_bytes())
    assert outputs.read_manifest(str(path), ["id"]).column("id").to_pylist() == ids
    assert [r["id"] for r in outputs.manifest_rows(str(path), ["id", "source"])] == ids
    assert outputs.count_manifest_rows(str(path)) == len(ids)
    assert len(sources) == 3
    for source in sources:
        if remote:
            assert isinstance(source, pa.BufferReader), source
        else:
            assert source == str(path)


def test_the_reuse_check_and_the_eda_report_read_the_manifest_by_its_path(checked, monkeypatch):
    # The callers, not only the readers: before issue 27 both opened the manifest and handed pyarrow the
    # Python file (validated.check) or a BytesIO of it (the EDA report).
    from beam_jobs import eda

    folder, checks, _ = checked
    sources, real = [], pq.ParquetFile
    monkeypatch.setattr(pq, "ParquetFile", lambda source, *a, **k: sources.append(source) or real(source, *a, **k))
    assert validated.check(str(checks), str(folder))
    assert eda.read_manifest(str(checks / outputs.MANIFEST)).num_rows
    assert sources == [str(checks / outputs.MANIFEST)] * 2


def test_read_manifest_rows_in_beam(tmp_path):
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from beam_jobs.transforms import ReadManifestRows

    path = tmp_path / outputs.MANIFEST
    ids = _manifest(path, rows=9_000)  # three row groups
    with TestPipeline() as p:
        rows = p | ReadManifestRows(str(path), ["id", "source"])
        assert_that(rows, equal_to([{"id": i, "source": "train"} for i in ids]))


@pytest.mark.slow
def test_a_process_that_read_a_manifest_exits_cleanly(tmp_path):
    # Readers over a Python file aborted some exits ("terminate called without an active exception",
    # status -6): pq.read_table about one in five, ParquetFile.read about one in a hundred on an AMD EPYC,
    # far fewer on an idle Intel Xeon (bench/RESULTS.md, issue 27). pcam-build's reuse check and the EDA
    # report read the manifest just before they exit. The check above is the deterministic one; this one
    # runs the readers as commands do, in fresh processes, eight at a time so that exits interleave.
    import concurrent.futures
    import subprocess
    import sys

    path = tmp_path / outputs.MANIFEST
    _manifest(path)
    script = (
        "from pcam_tfds.core import outputs\n"
        f"P = {str(path)!r}\n"
        "assert len(outputs.read_manifest(P, ['id', 'source']).to_pylist()) == 20_000\n"
        "assert sum(1 for _ in outputs.manifest_rows(P, ['id'])) == 20_000\n"
    )
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda _: subprocess.run([sys.executable, "-c", script], capture_output=True), range(60)))
    failed = [(r.returncode, r.stderr.decode(errors="replace")[-300:]) for r in runs if r.returncode != 0]
    assert not failed, failed
