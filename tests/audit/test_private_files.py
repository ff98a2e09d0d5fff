"""Files that carry the request log are not for every account on the host: export files and retention archives are
0640 and spooled batches 0600, whatever the umask, in directories others cannot enter."""

from __future__ import annotations

import os
import stat
import uuid

import pytest

from audit import export_jobs
from audit.models import AuditExport, AuditRecord
from audit.retention import apply_retention, archive_path
from gateway_project import private_files
from gateway_project.spool import Spool
from tests.audit.test_exports_async import exports, person  # noqa: F401  (exports: files in the test's directory)
from tests.audit.test_exports_async import write as write_recent
from tests.audit.test_retention import client, retention_setup  # noqa: F401  (an empty log, archives of the test's)
from tests.audit.test_retention import write as write_aged


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def permissive_umask():
    """The default umask of many systems: without care, files come out world-readable."""
    old = os.umask(0o002)
    yield
    os.umask(old)


def test_an_export_file_is_readable_by_owner_and_group_only(exports):  # noqa: F811
    mine = f"perm-{uuid.uuid4().hex[:8]}"
    write_recent(2, mine)
    export = export_jobs.request_export(person("compliance"), "records", "csv", {"client": mine})
    assert export.status == AuditExport.DONE, export.error
    assert mode(export_jobs.export_path(export)) == 0o640
    assert mode(exports) & 0o007 == 0


def test_a_retention_archive_is_readable_by_owner_and_group_only(settings):
    write_aged((200, client()), (1, None))
    archive = apply_retention().archive  # what else is in the log (other tests' records) does not matter here
    assert archive is not None and archive.records >= 1
    assert mode(archive_path(archive)) == 0o640
    assert mode(settings.GATEWAY_ARCHIVE_DIR) & 0o007 == 0


def test_a_spooled_batch_is_readable_by_its_owner_only(tmp_path):
    spool = Spool(tmp_path / "spool")
    path = spool.put([(AuditRecord, {"request_id": "r1", "input_preview": "hello"})])
    assert mode(path) == 0o600 and mode(tmp_path / "spool") == 0o700


def test_an_existing_file_is_narrowed_when_it_is_written_again(tmp_path):
    path = tmp_path / "old.part"
    path.write_text("left by an earlier run")
    path.chmod(0o666)
    with private_files.create(path) as handle:
        handle.write(b"new")
    assert mode(path) == 0o640 and path.read_bytes() == b"new"
