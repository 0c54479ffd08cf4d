"""Multi-worker training (`--strategy=multi_worker`, trainer.training.distribute): TF_CONFIG, sharding, the shared
budget, and two real CPU workers on loopback ports training one run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from cli_runs import REPO

from trainer import data, run_folder
from trainer.config import train_config, validation
from trainer.training import distribute
from trainer.training.budget import Budget, SharedBudget


def _tf_config(workers: list[str], task_type: str = "worker", index: int = 0, chief: list[str] | None = None) -> str:
    cluster = {"worker": workers, **({"chief": chief} if chief else {})}
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_tf_config_names_the_chief():
    two = ["localhost:1", "localhost:2"]
    assert distribute.task_from_tf_config(_tf_config(two, index=0)).is_chief
    worker1 = distribute.task_from_tf_config(_tf_config(two, index=1))
    assert (worker1.is_chief, worker1.num_workers) == (False, 2)
    # With a chief task in the cluster, worker 0 is an ordinary worker.
    with_chief = _tf_config(two, index=0, chief=["localhost:3"])
    assert not distribute.task_from_tf_config(with_chief).is_chief
    chief = distribute.task_from_tf_config(_tf_config(two, "chief", 0, chief=["localhost:3"]))
    assert chief.is_chief and chief.num_workers == 3
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        distribute.task_from_tf_config(None)
    with pytest.raises(ValueError, match="not in its cluster"):
        distribute.task_from_tf_config(_tf_config(two, index=2))
    with pytest.raises(ValueError, match="only chief and worker"):
        distribute.task_from_tf_config(_tf_config(two, "ps", 0))
    with pytest.raises(ValueError, match="not a cluster and a task"):
        distribute.task_from_tf_config('{"cluster": {}}')


def test_output_dir_of_a_worker_is_temporary_and_removed(tmp_path):
    worker = distribute.task_from_tf_config(_tf_config(["a:1", "b:2"], index=1))
    with distribute.write_dir(tmp_path, distribute.SINGLE) as out:
        assert out == tmp_path
    with distribute.write_dir(tmp_path, worker) as out:
        assert out != tmp_path
        (out / "state").mkdir()
        (out / "state" / "x").write_text("1")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_shared_budget_follows_the_agreed_verdict():
    asked = []

    def chief_says_stop(local: bool) -> bool:
        asked.append(local)
        return True

    shared = SharedBudget(Budget(wall_s=3600), chief_says_stop)
    assert shared.spent() and asked == [False]  # this worker's own clock said go on; the chief's said stop
    assert SharedBudget(Budget(wall_s=1e-9), lambda local: False).spent() is False
    assert "3600 s wall" in shared.describe()


def test_multi_worker_config_refusals(tmp_path):
    base = dict(model="baseline", data_dir=str(tmp_path), model_dir=str(tmp_path), strategy="multi_worker")
    validation.validate(train_config.TrainConfig(**base))
    with pytest.raises(ValueError, match="one step per execution"):
        validation.validate(train_config.TrainConfig(**base, steps_per_execution=4))
    with pytest.raises(ValueError, match="budget schedule plans from this process"):
        validation.validate(
            train_config.TrainConfig(**base, schedule="budget", epochs=None, max_minutes=1.0, early_stopping_patience=0)
        )


def _ids(ds) -> list[bytes]:
    return [i for batch in ds.as_numpy_iterator() for i in batch["id"]]


@pytest.mark.parametrize("by_files", [True, False])
def test_workers_read_disjoint_shards_that_cover_the_split(pcam_data, by_files):
    builder = data.load_builder(str(pcam_data["tfds"]), "pcam/full")
    files = data.split_files(builder, "train") + data.split_files(builder, "validation")
    count = len(files) if by_files else len(files) + 1  # at least one file each, or fewer files than workers
    everything = _ids(data.eval_dataset(files, 7, with_ids=True))
    parts = [_ids(data.eval_dataset(files, 7, with_ids=True, shard=(i, count))) for i in range(count)]
    assert sorted(i for p in parts for i in p) == sorted(everything)
    assert all(parts)
    train_parts = []
    for i in range(count):
        ds = data.train_dataset(files, 5, seed=1, augment="none", shuffle_buffer=16, shard=(i, count))
        train_parts.append(sum(len(labels) for _, labels in ds.as_numpy_iterator()))
    assert sum(train_parts) == len(everything)


def test_class_weights_ride_along_as_sample_weights(pcam_data):
    builder = data.load_builder(str(pcam_data["tfds"]), "pcam/full")
    ds = data.train_dataset(data.split_files(builder, "train"), 8, seed=0, augment="none", class_weights=(1.0, 1.5))
    images, labels, weights = next(ds.as_numpy_iterator())
    assert images.dtype.name == "uint8"
    assert list(weights) == [1.5 if y else 1.0 for y in labels[:, 0]]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run_cluster(flags: list[str], tmp_path, name: str) -> list[str]:
    """`python -m trainer --strategy=multi_worker FLAGS` as two worker processes on loopback ports; their logs.

    Each worker has its own TMPDIR, so the test can see what a worker leaves behind."""
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tmpdir = tmp_path / f"{name}-tmp{index}"
        tmpdir.mkdir()
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TMPDIR": str(tmpdir),
            "TF_CONFIG": _tf_config(workers, index=index),
        }
        log = open(tmp_path / f"{name}-worker{index}.log", "w")
        cmd = [sys.executable, "-m", "trainer", "--strategy=multi_worker", *flags]
        procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True), log))
    results = []
    for proc, log in procs:
        try:
            proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        results.append(proc.returncode)
    for index, rc in enumerate(results):
        text = (tmp_path / f"{name}-worker{index}.log").read_text()
        assert rc == 0, f"worker {index} exited {rc}:\n{text[-4000:]}"
    return [(tmp_path / f"{name}-worker{i}.log").read_text() for i in range(2)]


def _files(root) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_file() and p.name != ".lock"}


@pytest.mark.slow
def test_two_workers_train_one_run_stop_together_and_resume(pcam_data, baseline_run, tmp_path):
    run_dir = tmp_path / "run"
    flags = [
        "--model=baseline",
        f"--data_dir={pcam_data['tfds']}",
        f"--model_dir={run_dir}",
        "--epochs=2",
        "--steps_per_epoch=2",
        "--batch_size=8",
        "--sample_fraction=0.5",
        "--mixed_precision=off",
        "--jit_compile=off",
        "--verbose=0",
    ]
    # A budget spent at once: the chief's verdict stops both workers after the first batch (a worker that
    # went on alone would hang in its next all-reduce), and the chief evaluates what it has.
    logs = _run_cluster([*flags, "--max_minutes=1e-6"], tmp_path, "budget")
    assert all("time budget spent" in log for log in logs)
    state = json.loads((run_dir / run_folder.STATE_DIR / run_folder.STATE_FILE).read_text())
    assert (state["epoch"], state["phase_done"]) == (1, False)
    assert (run_dir / "metrics.json").exists()

    # The same command without the budget resumes the run on both workers and finishes it.
    logs = _run_cluster(flags, tmp_path, "resume")
    assert all("resuming" in log for log in logs)
    state = json.loads((run_dir / run_folder.STATE_DIR / run_folder.STATE_FILE).read_text())
    assert (state["epoch"], state["phase_done"]) == (2, True)
    with open(run_dir / "training_log.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["0", "1"]

    # One run folder with what a single-host run writes, and nothing left by the other worker.
    assert _files(run_dir) == _files(baseline_run)
    assert (run_dir / "model.keras").stat().st_size > 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == set(json.loads((baseline_run / "metrics.json").read_text()))
    assert 0 < metrics["num_examples"] < 24  # half of the validation split
    config = train_config.TrainConfig.from_json((run_dir / "config.json").read_text())
    assert (config.strategy, config.steps_per_execution) == ("multi_worker", 1)
    for name in ("budget", "resume"):
        assert list((tmp_path / f"{name}-tmp1").iterdir()) == [], "worker 1 left files behind"
