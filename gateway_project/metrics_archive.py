"""A dead worker's metric files folded into one archive per kind, so the metrics directory of a gateway whose workers
restart holds a file per kind and live worker, not one for every worker it ever ran.

prometheus-client's multiprocess mode keeps each process's values in files of its own
(``counter_<pid>.db``, ``histogram_<pid>.db``, 1 MiB each at least) and sums every
file at each scrape. A dead process's counts must stay (a counter never goes down),
so without this its files would stay too, and each scrape would read more of them.
The supervisor adds them into ``<kind>_archive.db`` and removes them under an
exclusive lock on the directory that every scrape holds shared: a scrape counts a
dead worker once, in its own files or in the archive, never in both and never in
neither (a counter seen going down is a reset to Prometheus, and its rate a spike).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict

log = logging.getLogger("gateway.server")

LOCK_FILE = ".scrape.lock"
KINDS = ("counter", "histogram", "summary")  # summed at a scrape; live gauges go with their process
ARCHIVE = "archive"  # a name no process id has: ``<kind>_archive.db``


@contextlib.contextmanager
def directory_lock(directory: str | Path, *, exclusive: bool) -> Iterator[None]:
    """The directory's lock across processes (flock): shared by scrapes, exclusive while files are archived."""
    with open(Path(directory) / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield  # released with the file


def archive_dead_worker(directory: str | Path, pid: int) -> None:
    """Move a dead process's values into the archive: its live gauges go, its counts and observations stay.

    Never raises: the supervisor calls it between restarts, and a file it cannot read
    (a worker killed halfway through growing it) stays where it is, logged, rather than
    stop the supervisor and every worker with it.
    """
    directory = Path(directory)
    try:
        multiprocess.mark_process_dead(pid, str(directory))
        with directory_lock(directory, exclusive=True):
            for kind in KINDS:
                _archive(directory / f"{kind}_{pid}.db", directory / f"{kind}_{ARCHIVE}.db", pid)
    except OSError:  # the directory gone or not writable: its files stay, the supervisor goes on
        log.exception("metrics: dead worker %d's files could not be archived", pid)


def _archive(dead: Path, archive_path: Path, pid: int) -> None:
    try:
        values = list(MmapedDict.read_all_values_from_file(str(dead)))  # all read before any is written
    except FileNotFoundError:
        return
    except Exception:
        log.exception("metrics: %s of dead worker %d could not be read; left in place", dead.name, pid)
        return
    archive = MmapedDict(str(archive_path))
    try:
        for key, value, timestamp, _position in values:
            total, _when = archive.read_value(key)
            archive.write_value(key, total + value, timestamp)
    finally:
        archive.close()
    dead.unlink()


class ArchivingAwareCollector(multiprocess.MultiProcessCollector):
    """prometheus-client's collector of every process's files, read under the directory's shared lock."""

    def collect(self):
        with directory_lock(self._path, exclusive=False):
            return list(super().collect())
