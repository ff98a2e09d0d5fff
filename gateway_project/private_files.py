"""Files only the gateway's own user (and its group) may read: exports, archives, spooled batches.

Audit exports and archives carry the request log, spooled batches its rows; a file made
with the default umask (0644) would be readable by every account on the host. Each is
created with its mode set on the open descriptor, whatever the umask, and its directory
is made without access for others.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

# Exports and archives: the gateway's user writes them, its group (web processes and workers on the shared disk,
# backup jobs) may read them; nobody else.
SHARED_FILE_MODE = 0o640
SHARED_DIR_MODE = 0o750
# Local files of this host's processes only (the spool).
OWNER_FILE_MODE = 0o600
OWNER_DIR_MODE = 0o700


def make_dir(path: Path, mode: int = SHARED_DIR_MODE) -> None:
    """``path`` and its parents, the ones made here without access for others."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)


def create(path: Path, mode: int = SHARED_FILE_MODE, *, text: bool = False) -> IO:
    """A new (or emptied) file at ``path`` opened for writing, readable only as ``mode`` allows."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask only narrows the mode os.open gives; an existing file keeps its own
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {}))
