"""Retention: old records are archived to a verifiable file, then deleted in batches; the chain still holds."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection
from django.test import Client as Browser
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from audit import retention
from audit.archive_check import verify_archive
from audit.chain import verify
from audit.chain_format import GENESIS
from audit.exports import RECORD_FIELDS
from audit.models import AdminAction, ArchivedRun, AuditArchive, AuditRecord
from audit.recorder import record_request
from audit.retention import apply_retention, archive_path, due_records, retention_lock
from gateway_project.celery import app as celery_app
from gateway_project.writer import writer
from keys.api_tokens import issue_token
from keys.models import Client
from tests.audit.keyring import offline_env
from tests.conftest import wait_for
from tests.servers import ROOT, server_env, stop

VERIFY_EXPORT = str(ROOT / "audit" / "verify_export.py")


@pytest.fixture(autouse=True)
def retention_setup(live_db, settings, tmp_path):
    """An empty request log (the chain starts again at seq 1), archives in a directory of the test's own."""
    settings.GATEWAY_ARCHIVE_DIR = tmp_path / "archive"
    settings.GATEWAY_AUDIT_RETENTION_DAYS = 90
    settings.GATEWAY_RETENTION_BATCH = 5000
    _empty()
    yield
    _empty()


def _empty():
    ArchivedRun.objects.all().delete()
    AuditArchive.objects.all().delete()
    AuditRecord.objects.all().delete()
    Client.objects.filter(slug__startswith="ret-").delete()


def client(days: int | None = None) -> Client:
    return Client.objects.create(name="Retained", slug=f"ret-{uuid.uuid4().hex[:8]}", audit_retention_days=days)


def write(*records: tuple[int, Client | None]) -> list[AuditRecord]:
    """Records ``(age in days, client)`` through the gateway's recorder and writer, chained in this order."""
    now, ids = timezone.now(), []
    for age, owner in records:
        request_id = uuid.uuid4().hex
        row = record_request(
            request_id=request_id, method="POST", path="/v1/chat/completions", status=200, latency_ms=12.5,
            client_id=owner.pk if owner else None, client_slug=owner.slug if owner else "", api_key_id=3,
            key_prefix="agk_ret", agent="research", model="gpt-4o", input_tokens=10, output_tokens=5,
            cost_usd=Decimal("0.000170400"), client_ip="10.0.0.1", user_agent="pytest", input_text="hello",
            output_text="hi", details={"retries": 1, "failed_targets": ["http://a.example/v1"]},
        )  # fmt: skip
        row["created_at"] = now - timedelta(days=age, seconds=1)  # the writer has not taken it yet
        ids.append(request_id)
    writer.flush_sync()
    return list(AuditRecord.objects.filter(request_id__in=ids).order_by("seq"))


def seqs(records) -> list[int]:
    return [r.seq for r in records]


def kept() -> list[int]:
    return list(AuditRecord.objects.order_by("seq").values_list("seq", flat=True))


def archived_rows(archive: AuditArchive) -> list[dict]:
    with gzip.open(archive_path(archive), "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def files() -> list[str]:
    """The archive directory's files, but the lock file runs use on SQLite."""
    return sorted(p.name for p in settings.GATEWAY_ARCHIVE_DIR.iterdir() if p.name != ".retention.lock")


def run_offline(*args) -> subprocess.CompletedProcess:
    """The offline checker, outside Django, as an auditor runs it."""
    return subprocess.run(
        [sys.executable, VERIFY_EXPORT, *map(str, args)], capture_output=True, text=True, env=offline_env()
    )


# --- What is due --------------------------------------------------------------------------------------


def test_records_past_the_default_are_archived_then_deleted_and_newer_ones_stay():
    records = write((100, None), (95, None), (91, None), (89, None), (10, None))
    summary = apply_retention()
    assert (summary.archived, summary.deleted, summary.runs) == (3, 3, 1)
    assert kept() == seqs(records[3:])
    archive = AuditArchive.objects.get()
    assert (archive.records, archive.first_seq, archive.last_seq) == (3, records[0].seq, records[2].seq)
    assert archive.oldest_at == records[0].created_at and archive.newest_at == records[2].created_at
    assert archive.policy["default_days"] == 90
    run = archive.runs.get()
    assert (run.first_seq, run.last_seq, run.prev_hash, run.last_hash) == (1, 3, GENESIS, records[2].record_hash)
    assert AuditRecord.objects.get(seq=4).record_hash == records[3].record_hash  # newer records are untouched
    assert apply_retention().archive is None  # nothing more is due
    assert AuditArchive.objects.count() == 1


def test_a_client_keeps_its_records_longer_or_shorter_than_the_default():
    longer, shorter, plain = client(days=200), client(days=30), client()
    records = write(
        (100, None), (100, longer), (250, longer), (40, shorter), (20, shorter), (100, plain), (50, plain), (5, None)
    )
    due = [records[i].seq for i in (0, 2, 3, 5)]
    assert sorted(due_records().values_list("seq", flat=True)) == due
    apply_retention()
    assert kept() == [records[i].seq for i in (1, 4, 6, 7)]
    overrides = {o["client"]: o["days"] for o in AuditArchive.objects.get().policy["overrides"]}
    assert overrides[longer.slug] == 200 and overrides[shorter.slug] == 30


def test_a_default_of_0_keeps_records_for_ever_except_where_a_client_says_otherwise(settings):
    settings.GATEWAY_AUDIT_RETENTION_DAYS = 0
    shorter = client(days=30)
    records = write((4000, None), (40, shorter), (4000, client()))
    assert list(due_records().values_list("seq", flat=True)) == [records[1].seq]
    settings.GATEWAY_AUDIT_RETENTION_DAYS = 0
    shorter.audit_retention_days = None
    shorter.save()
    assert not due_records().exists()
    assert apply_retention().archive is None and len(kept()) == 3


# --- The archive file ---------------------------------------------------------------------------------


def test_the_archive_is_gzip_json_lines_with_every_due_record_once_and_verifies_offline():
    shorter = client(days=30)
    records = write((100, None), (100, None), (40, shorter), (10, None), (40, shorter), (40, shorter), (10, None))
    due = [records[i].seq for i in (0, 1, 2, 4, 5)]
    apply_retention()
    archive = AuditArchive.objects.get()
    rows = archived_rows(archive)
    assert [row["seq"] for row in rows] == due
    assert all(list(row) == RECORD_FIELDS for row in rows)
    assert rows[2]["request_id"] == records[2].request_id and rows[2]["cost_usd"] == "0.000170400"
    assert rows[2]["details"] == {"retries": 1, "failed_targets": ["http://a.example/v1"]}
    assert hashlib.sha256(archive_path(archive).read_bytes()).hexdigest() == archive.sha256
    assert archive_path(archive).stat().st_size == archive.file_size
    assert list(archive.runs.values_list("first_seq", "last_seq")) == [(1, 3), (5, 6)]
    assert verify_archive(archive).ok

    every = run_offline(archive_path(archive), "--records-only")
    assert every.returncode == 0 and "5 checked" in every.stdout, every.stdout + every.stderr
    for run in archive.runs.all():
        one = run_offline(archive_path(archive), "--seq", f"{run.first_seq}-{run.last_seq}", "--anchor", run.prev_hash)
        assert one.returncode == 0, one.stdout + one.stderr
        assert f"Last record_hash: {run.last_hash}" in one.stdout
    wrong = run_offline(archive_path(archive), "--seq", "5-6", "--anchor", "f" * 64)
    assert wrong.returncode == 1


def test_an_archive_of_one_run_verifies_offline_whole_from_its_anchor():
    write((100, None), (100, None), (100, None), (1, None))
    apply_retention()
    archive = AuditArchive.objects.get()
    whole = run_offline(archive_path(archive), "--anchor", archive.runs.get().prev_hash)
    assert whole.returncode == 0 and "The chain holds: 3 records" in whole.stdout


def test_a_tampered_archive_file_is_detected():
    write((100, None), (100, None), (100, None), (1, None))
    apply_retention()
    archive = AuditArchive.objects.get()
    path = archive_path(archive)
    rows = archived_rows(archive)
    rows[1]["status"] = 500
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    found = verify_archive(archive)
    assert found.finding.kind == "altered" and "SHA-256" in found.describe()
    # A forger who also records the new file's SHA-256 is caught by the record's own hash.
    AuditArchive.objects.filter(pk=archive.pk).update(sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    archive.refresh_from_db()
    found = verify_archive(archive)
    assert (found.finding.kind, found.finding.seq) == ("altered", 2)
    assert run_offline(path, "--records-only").returncode == 1
    path.unlink()
    assert "missing" in verify_archive(archive).describe()


def test_a_run_that_does_not_match_its_file_is_detected():
    write((100, None), (100, None), (1, None))
    apply_retention()
    archive = AuditArchive.objects.get()
    ArchivedRun.objects.filter(archive=archive).update(last_hash="e" * 64)
    assert "does not hold the run seq 1 to 2" in verify_archive(archive).describe()


# --- Deletion -----------------------------------------------------------------------------------------


def test_archived_records_are_deleted_in_short_batches(settings):
    settings.GATEWAY_RETENTION_BATCH = 3
    write(*[(100, None)] * 10, (1, None))
    with CaptureQueriesContext(connection) as queries:
        summary = apply_retention()
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert (summary.deleted, summary.batches, len(deletes)) == (10, 4, 4)
    assert kept() == [11]


def test_many_short_runs_share_a_batch(settings):
    settings.GATEWAY_RETENTION_BATCH = 4
    shorter = client(days=30)
    write(*[(40, shorter), (1, None)] * 6)  # six runs of one record each
    summary = apply_retention()
    assert (summary.runs, summary.deleted, summary.batches) == (6, 6, 2)
    assert kept() == [2, 4, 6, 8, 10, 12]


def test_a_run_that_dies_while_deleting_is_finished_by_the_next_and_nothing_is_lost_or_doubled(settings, monkeypatch):
    settings.GATEWAY_RETENTION_BATCH = 2
    records = write(*[(100, None)] * 7, (1, None), (1, None))
    real, calls = retention._delete_batch, []

    def dies_on_the_third(ranges):
        calls.append(ranges)
        if len(calls) == 3:
            raise RuntimeError("worker killed")
        return real(ranges)

    monkeypatch.setattr(retention, "_delete_batch", dies_on_the_third)
    with pytest.raises(RuntimeError):
        apply_retention()
    monkeypatch.setattr(retention, "_delete_batch", real)
    assert kept() == seqs(records[4:])  # archived, half deleted
    result = verify()
    assert result.ok, result.describe()  # the chain holds while the deletion is unfinished
    write((100, None))  # due since
    summary = apply_retention()
    assert summary.resumed == 3 and summary.archived == 1
    first, second = AuditArchive.objects.order_by("id")
    assert (first.records, second.records) == (7, 1)
    assert [r["seq"] for r in archived_rows(first)] == seqs(records[:7])
    assert kept() == seqs(records[7:])
    assert verify().ok and verify_archive(first).ok and verify_archive(second).ok


def test_files_of_a_run_that_died_before_saving_its_archive_are_removed_and_their_records_archived_once():
    records = write((100, None), (100, None), (1, None))
    directory = settings.GATEWAY_ARCHIVE_DIR
    directory.mkdir(parents=True)
    (directory / "audit-records-20260101-000000-seq1-2.jsonl.gz").write_bytes(b"a run killed before its commit")
    (directory / ".audit-records-20260101-000000-abcd1234.part").write_bytes(b"half")
    (directory / "notes.txt").write_text("not ours")
    summary = apply_retention()
    assert sorted(summary.orphans) == [
        ".audit-records-20260101-000000-abcd1234.part",
        "audit-records-20260101-000000-seq1-2.jsonl.gz",
    ]
    archive = AuditArchive.objects.get()
    assert files() == [archive.file_name, "notes.txt"]
    assert [r["seq"] for r in archived_rows(archive)] == seqs(records[:2]) and kept() == [3]


def test_an_archive_whose_row_was_deleted_is_kept_as_evidence_not_removed_as_an_orphan():
    """Whoever deletes an archive's row (to hide a cut) must not get the next retention run to delete its file."""
    write((100, None), (100, None), (1, None))
    archive = apply_retention().archive
    ArchivedRun.objects.filter(archive=archive).delete()
    AuditArchive.objects.filter(pk=archive.pk).delete()
    summary = apply_retention()
    assert summary.orphans == []
    assert archive.file_name in files()


def test_a_failed_save_leaves_no_file_and_every_record(monkeypatch):
    write((100, None), (1, None))

    def refuses(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(ArchivedRun.objects, "bulk_create", refuses)
    with pytest.raises(RuntimeError):
        apply_retention()
    assert not AuditArchive.objects.exists() and len(kept()) == 2
    assert files() == []


def test_only_one_run_at_a_time():
    write((100, None), (1, None))
    held, release = threading.Event(), threading.Event()

    def other_run():
        try:
            with retention_lock() as got:
                assert got
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=other_run)
    thread.start()
    assert held.wait(10)
    try:
        summary = apply_retention()
    finally:
        release.set()
        thread.join()
    assert summary.skipped and "in progress" in summary.describe() and len(kept()) == 2
    assert apply_retention().archived == 1


def test_the_trail_is_never_removed():
    old = AdminAction.objects.create(created_at=timezone.now() - timedelta(days=4000), actor="ada", via="console",
                                     action="update", object_type="keys.client")  # fmt: skip
    trail = AdminAction.objects.count()
    write((100, None), (1, None))
    apply_retention()
    assert AdminAction.objects.count() == trail and AdminAction.objects.filter(pk=old.pk).exists()


# --- The chain across the cut ------------------------------------------------------------------------


def test_the_chain_verifies_across_an_archived_prefix_and_archived_runs_in_the_middle():
    shorter = client(days=30)
    records = write((100, None), (100, None), (50, None), (40, shorter), (40, shorter), (20, None), (40, shorter),
                    (1, None))  # fmt: skip
    apply_retention()
    assert kept() == [records[i].seq for i in (2, 5, 7)]
    result = verify()
    assert result.ok and (result.checked, result.first_seq, result.last_seq) == (3, 3, 8), result.describe()
    assert verify(since=records[5].created_at - timedelta(microseconds=1)).ok  # the record before is archived
    assert verify(since=records[2].created_at - timedelta(microseconds=1)).ok  # anchored at the prefix's run


def test_a_record_deleted_by_hand_is_still_named_removed():
    shorter = client(days=30)
    records = write((100, None), (50, None), (40, shorter), (20, None), (10, None), (40, shorter), (5, None),
                    (1, None))  # fmt: skip
    apply_retention()
    AuditRecord.objects.filter(seq=records[3].seq).delete()
    found = verify().finding
    assert (found.kind, found.seq) == ("removed", records[4].seq)
    assert found.message.endswith(f": seq {records[3].seq}.")
    AuditRecord.objects.filter(seq=records[6].seq).delete()  # next to an archived run: only it is named
    AuditRecord.objects.filter(seq=records[4].seq).delete()
    found = verify(since=records[4].created_at).finding
    assert (found.kind, found.seq) == ("removed", records[7].seq)
    assert found.message.endswith(f": seq {records[6].seq}."), found.message


def test_records_deleted_by_hand_from_the_start_of_the_chain_are_named():
    records = write((100, None), (50, None), (40, None), (1, None))
    apply_retention()
    AuditRecord.objects.filter(seq__in=[records[1].seq, records[2].seq]).delete()
    found = verify().finding
    assert (found.kind, found.seq) == ("removed", records[3].seq)
    assert "seq 2 to 3" in found.message


def test_a_gap_an_archived_run_does_not_link_is_not_accepted():
    shorter = client(days=30)
    records = write((50, None), (40, shorter), (1, None))
    apply_retention()
    ArchivedRun.objects.update(prev_hash="d" * 64)
    found = verify().finding
    assert (found.kind, found.seq) == ("removed", records[2].seq)


# --- Command and task ---------------------------------------------------------------------------------


def test_the_command_says_what_it_would_do_and_a_dry_run_changes_nothing(capsys):
    shorter = client(days=30)
    write((100, None), (100, None), (40, shorter), (1, None))
    call_command("apply_retention", "--dry-run")
    out = capsys.readouterr().out
    assert "Default retention: 90 days." in out and f"client {shorter.slug}: 30 days" in out
    assert "3 records are past their retention (seq 1 to 3)" in out
    assert len(kept()) == 4 and not AuditArchive.objects.exists()
    assert not settings.GATEWAY_ARCHIVE_DIR.exists() or not any(settings.GATEWAY_ARCHIVE_DIR.iterdir())
    call_command("apply_retention")
    out = capsys.readouterr().out
    assert "Archived 3 records (seq 1 to 3, 1 run(s))" in out and "deleted 3 in 1 batches" in out
    assert kept() == [4]


def test_beat_runs_the_task_hourly_and_each_run_expires_at_the_next():
    from audit.tasks import apply_audit_retention

    entry = settings.CELERY_BEAT_SCHEDULE["apply-audit-retention"]
    assert entry["task"] == apply_audit_retention.name == "audit.tasks.apply_audit_retention"
    assert entry["schedule"] == entry["options"]["expires"] == 3600
    write((100, None), (1, None))
    assert apply_audit_retention.apply().get()["archived"] == 1


# --- Console and API ----------------------------------------------------------------------------------


def _user(role: str | None):
    user = get_user_model().objects.create_user(f"{role or 'nobody'}-{uuid.uuid4().hex[:8]}")
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def console_as():
    def make(role):
        browser = Browser()
        browser.force_login(_user(role))
        return browser

    return make


@pytest.fixture
def api_as():
    def make(role):
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(_user(role))[1]}")
        return api

    return make


@pytest.fixture
def tasks_eager():
    """``tasks_eager(True)``: Celery runs tasks in the caller (or, False, queues them) for this test."""
    before = celery_app.conf.task_always_eager

    def switch(eager: bool) -> None:
        celery_app.conf.task_always_eager = eager

    yield switch
    celery_app.conf.task_always_eager = before


@pytest.fixture
def archived():
    """An archive of two records, one newer record kept."""
    shorter = client(days=30)
    write((100, None), (40, shorter), (1, None))
    apply_retention()
    return AuditArchive.objects.get(), shorter


def test_compliance_sees_the_policy_and_archives_verifies_and_downloads_one(console_as, archived):
    archive, shorter = archived
    compliance = console_as("compliance")
    page = compliance.get("/console/audit/retention/")
    body = page.content.decode()
    assert page.status_code == 200 and "90 days" in body and shorter.slug in body and archive.file_name in body
    assert 'href="/console/audit/retention/"' in body  # the navigation links it
    assert "Run now" not in body
    checked = compliance.get(f"/console/audit/retention/{archive.pk}/verify/")
    assert checked.status_code == 200 and "✓" in checked.content.decode()
    detail = compliance.get(f"/console/audit/retention/{archive.pk}/").content.decode()
    assert archive.runs.get().last_hash in detail and archive.sha256 in detail
    download = compliance.get(f"/console/audit/retention/{archive.pk}/download/")
    assert download.status_code == 200 and b"".join(download.streaming_content) == archive_path(archive).read_bytes()
    event = AdminAction.objects.get(object_type="audit.auditarchive", object_id=str(archive.pk))
    assert event.action == "download" and event.changes["sha256"] == [None, archive.sha256]
    assert compliance.post("/console/audit/retention/run/").status_code == 403


def test_the_console_shows_a_tampered_archive(console_as, archived):
    archive, _ = archived
    with open(archive_path(archive), "ab") as handle:
        handle.write(b"\0")
    page = console_as("admin").get(f"/console/audit/retention/{archive.pk}/verify/").content.decode()
    assert "✗ Altered." in page and "SHA-256" in page


def test_an_admin_runs_retention_now_and_the_trail_says_so(console_as, tasks_eager):
    tasks_eager(True)  # run at once, as without a broker; the next test has a worker
    write((100, None), (1, None))
    admin = console_as("admin")
    assert "Run now" in admin.get("/console/audit/retention/").content.decode()
    response = admin.post("/console/audit/retention/run/", follow=True)
    assert response.status_code == 200 and "Archived 1 records" in response.content.decode()
    assert AuditArchive.objects.count() == 1 and len(kept()) == 1
    assert AdminAction.objects.filter(object_type="audit.retention", action="run").exists()


@pytest.mark.skipif(not settings.REDIS_URL, reason="a worker needs the production profile's Redis broker")
def test_run_now_queues_the_task_for_a_worker(console_as, tmp_path, tasks_eager):
    tasks_eager(False)
    write((100, None), (1, None))
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "gateway_project", "worker", "--pool", "threads", "-c", "1",
                "--loglevel", "WARNING", "-n", f"retention-{uuid.uuid4().hex[:8]}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=ROOT, env=server_env(CELERY_TASK_ALWAYS_EAGER="0", GATEWAY_ARCHIVE_DIR=settings.GATEWAY_ARCHIVE_DIR),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            response = console_as("admin").post("/console/audit/retention/run/", follow=True)
            assert "Retention run queued" in response.content.decode()
            archive = wait_for(AuditArchive.objects.first, seconds=30)
            assert archive is not None and archive.records == 1, log_path.read_text()
            assert wait_for(lambda: kept() == [2], seconds=10), log_path.read_text()
            assert verify_archive(archive).ok
        finally:
            assert stop(worker, seconds=15) == 0, log_path.read_text()


@pytest.mark.parametrize("role", ["operator", None])
def test_other_roles_may_not_see_retention(console_as, role, archived):
    archive, _ = archived
    browser, trail = console_as(role), AdminAction.objects.count()
    for url in ("/console/audit/retention/", f"/console/audit/retention/{archive.pk}/download/"):
        assert browser.get(url).status_code == 403
    assert browser.post("/console/audit/retention/run/").status_code == 403
    assert AdminAction.objects.count() == trail and len(kept()) == 1


def test_the_api_lists_archives_their_runs_and_verifies_them(api_as, archived):
    archive, _ = archived
    api = api_as("compliance")
    listed = api.get("/api/v1/audit-archives/").json()["results"]
    assert [(a["id"], a["records"], a["run_count"], a["sha256"]) for a in listed] == [
        (archive.pk, 2, 1, archive.sha256)
    ]
    runs = api.get(f"/api/v1/audit-archives/{archive.pk}/runs/").json()["results"]
    assert runs == [{"first_seq": 1, "last_seq": 2, "prev_hash": GENESIS, "last_hash": archive.runs.get().last_hash}]
    assert api.get(f"/api/v1/audit-archives/{archive.pk}/verify/").json() == {
        "ok": True, "checked": 2, "message": "The chain holds: 2 records, seq 1 to 2.", "kind": None,
    }  # fmt: skip
    archive_path(archive).write_bytes(b"not the archive")
    answer = api.get(f"/api/v1/audit-archives/{archive.pk}/verify/").json()
    assert answer["ok"] is False and answer["kind"] == "altered"
    assert api.delete(f"/api/v1/audit-archives/{archive.pk}/").status_code in (403, 405)
    assert api_as("operator").get("/api/v1/audit-archives/").status_code == 403


def test_an_admin_sets_a_client_override_in_the_console_and_the_api_with_a_trail(console_as, api_as):
    owner = client()
    admin = console_as("admin")
    form = admin.get(f"/console/clients/{owner.pk}/edit/").content.decode()
    assert 'name="audit_retention_days"' in form and "default (90 days)" in form
    data = {"name": owner.name, "slug": owner.slug, "is_active": "on", "audit_previews": "on"}
    edit = f"/console/clients/{owner.pk}/edit/"
    assert admin.post(edit, {**data, "audit_retention_days": "0"}).status_code == 400
    assert admin.post(edit, {**data, "audit_retention_days": "30"}).status_code == 302
    owner.refresh_from_db()
    assert owner.audit_retention_days == 30
    change = AdminAction.objects.get(object_type="keys.client", object_id=str(owner.pk), via="console")
    assert change.changes["audit_retention_days"] == [None, 30]

    api = api_as("admin")
    answer = api.patch(f"/api/v1/clients/{owner.pk}/", {"audit_retention_days": 365}, format="json")
    assert answer.status_code == 200 and answer.json()["audit_retention_days"] == 365
    assert api.patch(f"/api/v1/clients/{owner.pk}/", {"audit_retention_days": 0}, format="json").status_code == 400
    cleared = api.patch(f"/api/v1/clients/{owner.pk}/", {"audit_retention_days": None}, format="json")
    assert cleared.json()["audit_retention_days"] is None
    changes = AdminAction.objects.filter(object_type="keys.client", object_id=str(owner.pk), via="api")
    assert [c.changes["audit_retention_days"] for c in changes.order_by("seq")] == [[30, 365], [365, None]]
