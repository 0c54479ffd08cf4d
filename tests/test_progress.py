"""pcam_tfds.core.progress: lines at most every EVERY seconds, with rate and time left, on an injected clock."""

from __future__ import annotations

from pcam_tfds.core.progress import Progress, Tally, duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(total, every=10.0):
    clock, lines = Clock(), []
    return Progress("validate", total, every=every, clock=clock, emit=lines.append), clock, lines


def test_a_line_at_most_every_interval_with_rate_and_time_left():
    progress, clock, lines = make(total=10_000)
    clock.now += 5
    assert not progress.update(500)  # 5 s: too soon
    clock.now += 5
    assert progress.update(1_000)  # 10 s, 100 files/s, 9,000 left
    assert lines == ["validate: 1,000/10,000 files (10.0%), 100 files/s, about 1 min 30 s left"]
    clock.now += 9.9
    assert not progress.update(2_000)
    clock.now += 0.1
    assert progress.update(4_000)  # 20 s, 200 files/s, 6,000 left
    assert lines[-1] == "validate: 4,000/10,000 files (40.0%), 200 files/s, about 30 s left"


def test_without_a_total_only_count_and_rate():
    progress, clock, lines = make(total=None)
    clock.now += 20
    progress.update(3_000)
    assert lines == ["validate: 3,000 files, 150 files/s"]


def test_before_the_first_file_and_after_the_last_it_says_so_instead_of_a_rate():
    progress, clock, lines = make(total=50)
    clock.now += 10
    progress.update(0)  # workers starting
    clock.now += 10
    progress.update(50)  # all read; the job combines and writes
    assert lines == [
        "validate: 0/50 files, none done yet, 10 s so far",
        "validate: all 50 files done, finishing, 20 s so far",
    ]


def test_a_runner_that_reports_no_count_gets_its_note_and_the_time_so_far():
    progress, clock, lines = make(total=440)
    clock.now += 75
    progress.update(None, note="runner state RUNNING")
    progress.finish(None)
    assert lines == ["validate: runner state RUNNING, 1 min 15 s so far", "validate: done in 1 min 15 s"]


def test_finish_always_prints_the_total_and_duration():
    progress, clock, lines = make(total=440)
    clock.now += 2
    progress.finish(440)
    assert lines == ["validate: 440 files in 2 s (220 files/s)"]


def test_duration():
    assert [duration(s) for s in (0.4, 59, 60, 125, 3599, 3600, 3725)] == [
        "0 s",
        "59 s",
        "1 min 00 s",
        "2 min 05 s",
        "59 min 59 s",
        "1 h 00 min",
        "1 h 02 min",
    ]


def test_tally_sums_what_every_writer_added(tmp_path):
    path = str(tmp_path / "tally")
    assert Tally(path).count() == 0  # nothing added yet: no file
    a, b = Tally(path), Tally(path)  # two workers, one file
    a.add(256)
    b.add(100)
    a.add(1)
    assert Tally(path).count() == 357
