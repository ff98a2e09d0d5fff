"""A dead worker's metric files folded into the archive: a scrape sums the same figures before and after, sees each
dead worker exactly once while it is being archived, and the directory keeps one archive file per kind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from gateway_project.metrics_archive import ArchivingAwareCollector, archive_dead_worker


def write_worker(directory: Path, pid: int, counts: dict[str, int], observed: dict[str, int], live: int = 1) -> None:
    """The files a worker of process ``pid`` leaves: a counter per label, a histogram's buckets, a live gauge."""
    counter = MmapedDict(str(directory / f"counter_{pid}.db"))
    for label, value in counts.items():
        counter.write_value(mmap_key("requests", "requests_total", ["k"], [label], "r"), float(value), 0.0)
    counter.close()
    histogram = MmapedDict(str(directory / f"histogram_{pid}.db"))
    for bound, hits in observed.items():
        key = mmap_key("latency_seconds", "latency_seconds_bucket", ["le"], [bound], "l")
        histogram.write_value(key, float(hits), 0.0)
    histogram.write_value(mmap_key("latency_seconds", "latency_seconds_sum", [], [], "l"), float(pid), 0.0)
    histogram.close()
    gauge = MmapedDict(str(directory / f"gauge_livesum_{pid}.db"))
    gauge.write_value(mmap_key("queue_rows", "queue_rows", [], [], "q"), float(live), 0.0)
    gauge.close()


def figures(collector) -> dict[tuple, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


workers = st.dictionaries(
    st.integers(100, 140),
    st.tuples(
        st.dictionaries(st.sampled_from("abc"), st.integers(0, 10**6)),
        st.dictionaries(st.sampled_from(["0.1", "1.0", "+Inf"]), st.integers(0, 10**6)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(workers=workers, data=st.data())
def test_archiving_dead_workers_changes_no_count_and_drops_their_gauges(tmp_path_factory, workers, data):
    directory = tmp_path_factory.mktemp("metrics")
    for pid, (counts, observed) in workers.items():
        write_worker(directory, pid, counts, observed)
    dead = data.draw(st.lists(st.sampled_from(sorted(workers)), unique=True))
    collector = ArchivingAwareCollector(None, str(directory))
    before = {key: value for key, value in figures(collector).items() if key[0] != "queue_rows"}
    for pid in dead:
        archive_dead_worker(directory, pid)
    after = figures(collector)
    assert {key: value for key, value in after.items() if key[0] != "queue_rows"} == before
    assert after.get(("queue_rows", ()), 0.0) == len(workers) - len(dead)  # each live worker's 1, summed
    names = sorted(path.name for path in directory.glob("*.db"))
    archived = [name for name in names if "archive" in name]
    assert archived == (["counter_archive.db", "histogram_archive.db"] if dead else [])
    assert not [name for name in names if any(name.endswith(f"_{pid}.db") for pid in dead)]


def test_a_scrape_while_workers_are_archived_counts_each_exactly_once(tmp_path):
    """Each scrape reads the directory under a shared lock; archiving takes it exclusively. Without it a scrape could
    list a dead worker's file, then read the archive it was just added to (counted twice), or miss the file
    (FileNotFoundError: the scrape fails)."""
    pids = range(1000, 1040)
    for pid in pids:
        write_worker(tmp_path, pid, {"a": 1}, {"+Inf": 1})
    collector = ArchivingAwareCollector(None, str(tmp_path))
    totals = []
    done = threading.Event()

    def archive_all():
        for pid in pids:
            archive_dead_worker(tmp_path, pid)
        done.set()

    archiver = threading.Thread(target=archive_all)
    archiver.start()
    while not done.is_set() or not totals:
        totals.append(figures(collector)[("requests_total", (("k", "a"),))])
    archiver.join()
    assert set(totals) == {float(len(pids))}
    assert sorted(os.listdir(tmp_path)) == [".scrape.lock", "counter_archive.db", "histogram_archive.db"]


def test_the_plain_collector_reads_the_archive_the_same_way(tmp_path):
    """The archive is an ordinary file of prometheus-client's format: its own collector sums it like any other."""
    write_worker(tmp_path, 7, {"a": 2}, {"+Inf": 2})
    write_worker(tmp_path, 8, {"a": 3}, {"+Inf": 3})
    archive_dead_worker(tmp_path, 7)
    plain = figures(multiprocess.MultiProcessCollector(None, str(tmp_path)))
    assert plain[("requests_total", (("k", "a"),))] == 5.0
    assert plain[("latency_seconds_count", ())] == 5.0


def test_a_dead_workers_file_that_cannot_be_read_is_left_and_the_rest_archived(tmp_path, caplog):
    """The supervisor archives between restarts: a damaged file (a worker killed as it grew it) is logged and left,
    never an exception that would stop the supervisor and its workers."""
    write_worker(tmp_path, 9, {"a": 4}, {"+Inf": 4})
    damaged = tmp_path / "counter_9.db"
    damaged.write_bytes((10**9).to_bytes(4, "little") + b"\0" * 60)  # says it holds a gigabyte
    archive_dead_worker(tmp_path, 9)
    assert damaged.exists() and "counter_9.db of dead worker 9 could not be read" in caplog.text
    assert not (tmp_path / "histogram_9.db").exists() and (tmp_path / "histogram_archive.db").exists()
    assert not (tmp_path / "gauge_livesum_9.db").exists()


def test_archiving_into_a_directory_that_is_gone_logs_and_returns(tmp_path, caplog):
    archive_dead_worker(tmp_path / "gone", 9)
    assert "dead worker 9's files could not be archived" in caplog.text
