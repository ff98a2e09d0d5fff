"""Large audit exports run as a Celery task: a gzip file with the chain fields, its progress, for its requester only.

The records come through the gateway's own recorder and writer, which commit, so these tests use
committed data (``live_db``) and each names its own client, actor or time range.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client as Browser
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from audit import export_jobs
from audit.models import AdminAction, AuditExport, AuditRecord
from audit.recorder import record_request
from audit.tasks import delete_expired_exports, write_audit_export
from audit.trail import record_event
from gateway_project.celery import app as celery_app
from gateway_project.writer import writer
from keys.api_tokens import issue_token
from tests.audit.keyring import offline_env
from tests.conftest import wait_for
from tests.servers import ROOT, server_env, stop

VERIFY = [sys.executable, str(ROOT / "audit" / "verify_export.py")]
HOSTILE = 'He said "hi", then\nleft; =SUM(A1) ,"'


@pytest.fixture(autouse=True)
def exports(live_db, settings, tmp_path):
    """Files go to a directory of the test's own; tasks run eagerly (at commit) on either profile."""
    settings.GATEWAY_EXPORT_DIR = tmp_path / "exports"
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield settings.GATEWAY_EXPORT_DIR
    celery_app.conf.task_always_eager = eager


def person(role: str | None, name: str = "user"):
    user = get_user_model().objects.create_user(f"{name}-{uuid.uuid4().hex[:8]}")
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def console(user) -> Browser:
    browser = Browser()
    browser.force_login(user)
    return browser


def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(user)[1]}")
    return client


def write(count: int, client: str, status: int = 200, text: str = "hello", output: str = "fine", details=None):
    """``count`` records of one client through the gateway's recorder and writer."""
    ids = []
    for i in range(count):
        ids.append(uuid.uuid4().hex)
        record_request(
            request_id=ids[-1], method="POST", path="/v1/chat/completions", status=status, latency_ms=10.5 + i,
            client_id=7, client_slug=client, api_key_id=9, key_prefix="agk_exp", agent="research", model="gpt-4o",
            input_tokens=10 + i, output_tokens=5, cost_usd=Decimal("0.000170400"), client_ip="127.0.0.1",
            user_agent="pytest", input_text=text, output_text=output, details=details,
        )  # fmt: skip
    writer.flush_sync()
    return list(AuditRecord.objects.filter(request_id__in=ids).order_by("seq"))


def a_client() -> str:
    return f"exp-{uuid.uuid4().hex[:10]}"


def read_file(export: AuditExport) -> list[dict]:
    """The rows of a finished export's file, as an auditor's spreadsheet or script would read them."""
    with gzip.open(export_jobs.export_path(export), "rt", encoding="utf-8", newline="") as handle:
        if export.format == "csv":
            return list(csv.DictReader(handle))
        return [json.loads(line) for line in handle]


def finished(user, filters, kind="records", fmt="csv") -> AuditExport:
    export = export_jobs.request_export(user, kind, fmt, filters)
    assert export.status == AuditExport.DONE, export.error
    return export


# --- Console: when an export streams and when it becomes a job ------------------------------------------


def test_an_export_past_the_threshold_becomes_a_job_and_a_small_one_streams(settings):
    settings.GATEWAY_EXPORT_STREAM_MAX_ROWS = 3
    browser, small, large = console(person("compliance")), a_client(), a_client()
    write(3, small)
    write(4, large)

    streamed = browser.get("/console/audit/export/", {"client": small, "format": "csv"})
    assert streamed.status_code == 200 and streamed.streaming
    assert len(list(csv.reader(io.StringIO(b"".join(streamed.streaming_content).decode())))) == 1 + 3

    moved = browser.get("/console/audit/export/", {"client": large, "format": "jsonl"})
    export = AuditExport.objects.get(filters={"client": large})
    assert moved.status_code == 302 and moved["Location"] == f"/console/exports/{export.pk}/"
    assert (export.kind, export.format, export.rows_total, export.rows_written) == ("records", "jsonl", 4, 4)
    page = browser.get(moved["Location"])
    assert "The export (4 rows) is written to a file in the background" in page.content.decode()

    asked = browser.get("/console/audit/export/", {"client": small, "format": "csv", "background": "1"})
    assert asked.status_code == 302
    assert AuditExport.objects.get(filters={"client": small}).rows_written == 3


def test_the_trail_export_becomes_a_job_too(settings):
    settings.GATEWAY_EXPORT_STREAM_MAX_ROWS = 1
    user, actor = person("compliance"), person(None, "actor")
    for i in (1, 2, 3):
        record_event(actor, "api", "update", "keys.client", i, f"client {i}", {"name": ["a", "b"]})
    response = console(user).get("/console/admin-actions/export/", {"actor": actor.username, "format": "csv"})
    export = AuditExport.objects.get(requester=user)
    assert response.status_code == 302 and export.kind == "trail" and export.filters == {"actor": actor.username}
    rows = read_file(export)
    assert [r["object_id"] for r in rows] == ["1", "2", "3"] and {r["actor"] for r in rows} == {actor.username}


# --- The task's file ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_task_writes_a_gzip_of_the_filtered_rows_with_its_hash_and_size(fmt, exports):
    mine, other = a_client(), a_client()
    failing = write(2, mine, status=502)
    write(3, mine, status=200)
    write(2, other, status=502)
    export = finished(person("compliance"), {"client": mine, "status": 502}, fmt=fmt)

    assert re.fullmatch(rf"audit-log-\d{{8}}-\d{{6}}-{export.pk.hex[:8]}\.{fmt}\.gz", export.file_name)
    path = export_jobs.export_path(export)
    assert export.file_size == path.stat().st_size
    assert export.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert os.listdir(exports) == [export.file_name]  # nothing half-written is left beside it
    rows = read_file(export)
    assert [r["request_id"] for r in rows] == [r.request_id for r in failing]
    assert {str(r["status"]) for r in rows} == {"502"} and {r["client_slug"] for r in rows} == {mine}
    assert {"seq", "prev_hash", "record_hash", "target"} <= set(rows[0])
    assert (export.rows_total, export.rows_written, export.status) == (2, 2, "done")
    assert export.started_at <= export.finished_at
    ttl = timedelta(hours=settings.GATEWAY_EXPORT_TTL_HOURS)
    assert export.expires_at - export.finished_at == ttl


def test_formula_cells_are_neutralised_and_hostile_text_is_quoted(exports):
    mine = a_client()
    records = write(2, mine, text=HOSTILE, output="=cmd|' /C calc'!A0")
    write(1, mine, text="harmless")
    export = finished(person("compliance"), {"client": mine, "text": "then"})

    rows = read_file(export)
    assert [r["request_id"] for r in rows] == [r.request_id for r in records]
    assert {r["input_preview"] for r in rows} == {HOSTILE}  # quotes, commas and newline survive the round trip
    assert {r["output_preview"] for r in rows} == {"'=cmd|' /C calc'!A0"}  # a spreadsheet shows it, never runs it
    with gzip.open(export_jobs.export_path(export), "rt", encoding="utf-8", newline="") as handle:
        raw = handle.read()
    assert '"He said ""hi"", then\nleft; =SUM(A1) ,"""' in raw
    assert ",=" not in raw


def test_progress_is_saved_as_rows_are_written(exports):
    mine, user = a_client(), person("compliance")
    write(5, mine)
    export = AuditExport.objects.create(requester=user, filters={"client": mine}, rows_total=0)
    with CaptureQueriesContext(connection) as queries:
        export_jobs.write_export(export, progress_every=2)
    saved = [int(n) for q in queries for n in re.findall(r'SET "rows_written" = (\d+) WHERE', q["sql"])]
    assert saved == [2, 4]  # and the final update with the file's facts
    export.refresh_from_db()
    assert (export.status, export.rows_total, export.rows_written) == ("done", 5, 5)

    running = AuditExport.objects.create(requester=user, status="running", rows_total=8, rows_written=2)
    browser = console(user)
    state = browser.get(f"/console/exports/{running.pk}/status/").json()
    assert (state["status"], state["percent"], state["rows_written"], state["download_url"]) == ("running", 25, 2, None)
    listing = browser.get("/console/exports/").content.decode()
    assert "25% · 2 of 8 rows" in listing and "100% · 5 of 5 rows" in listing
    detail = browser.get(f"/console/exports/{running.pk}/").content.decode()
    assert "audit/export_progress.js" in detail and 'http-equiv="refresh"' in detail
    done = browser.get(f"/console/exports/{export.pk}/").content.decode()
    assert "export_progress.js" not in done and f"/console/exports/{export.pk}/download/" in done


def test_a_failed_write_leaves_no_file_and_says_why(exports, settings):
    blocker = exports.parent / "not-a-directory"
    blocker.write_text("")
    settings.GATEWAY_EXPORT_DIR = blocker / "exports"
    mine = a_client()
    write(1, mine)
    export = export_jobs.request_export(person("compliance"), "records", "csv", {"client": mine})
    assert export.status == "failed" and export.error.startswith(("FileExistsError", "NotADirectoryError"))
    assert export.file_name == "" and not (blocker / "exports").exists()


def test_an_export_the_broker_cannot_take_fails_at_once(monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(write_audit_export, "delay", refuse)
    export = export_jobs.request_export(person("compliance"), "records", "csv", {"client": a_client()})
    assert export.status == "failed" and "could not be queued" in export.error


def test_a_task_that_runs_twice_writes_once(exports):
    mine = a_client()
    write(1, mine)
    export = finished(person("compliance"), {"client": mine})
    write_audit_export(str(export.pk))  # a redelivered message finds the job taken
    assert AuditExport.objects.get(pk=export.pk).file_name == export.file_name
    assert os.listdir(exports) == [export.file_name]
    write_audit_export(str(uuid.uuid4()))  # and a job that is gone is nothing to do


# --- Download: the requester only, until it expires ------------------------------------------------------


def test_only_the_requester_downloads_even_an_admin_gets_404():
    mine, owner = a_client(), person("compliance", "owner")
    write(2, mine)
    export = finished(owner, {"client": mine})

    download = console(owner).get(f"/console/exports/{export.pk}/download/")
    assert download.status_code == 200 and download["Content-Type"] == "application/gzip"
    assert f'filename="{export.file_name}"' in download["Content-Disposition"]
    body = gzip.decompress(b"".join(download.streaming_content)).decode()
    assert len(list(csv.DictReader(io.StringIO(body)))) == 2

    for outsider in (person("compliance", "colleague"), person("admin", "boss")):
        browser = console(outsider)
        for page in ("", "status/", "download/"):
            assert browser.get(f"/console/exports/{export.pk}/{page}").status_code == 404
        assert str(export.pk) not in browser.get("/console/exports/").content.decode()
        assert api(outsider).get(f"/api/v1/audit-exports/{export.pk}/download/").status_code == 404
    operator = console(person("operator"))
    assert operator.get(f"/console/exports/{export.pk}/download/").status_code == 403
    assert operator.get("/console/exports/").status_code == 403


def test_an_expired_export_answers_410_gone():
    mine, owner = a_client(), person("compliance")
    write(1, mine)
    export = finished(owner, {"client": mine})
    AuditExport.objects.filter(pk=export.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    page = console(owner).get(f"/console/exports/{export.pk}/download/")
    assert page.status_code == 410 and "This export has expired" in page.content.decode()
    answer = api(owner).get(f"/api/v1/audit-exports/{export.pk}/download/")
    assert answer.status_code == 410 and "expired" in answer.json()["detail"]
    assert not AdminAction.objects.filter(object_id=str(export.pk), action="download").exists()
    assert "expired" in console(owner).get("/console/exports/").content.decode()


def test_a_running_export_has_nothing_to_download_yet():
    owner = person("compliance")
    running = AuditExport.objects.create(requester=owner, status="running", rows_total=10)
    page = console(owner).get(f"/console/exports/{running.pk}/download/")
    assert page.status_code == 302 and page["Location"] == f"/console/exports/{running.pk}/"
    assert api(owner).get(f"/api/v1/audit-exports/{running.pk}/download/").status_code == 409


def test_the_sweep_deletes_expired_files_and_abandoned_partial_ones(exports):
    mine, owner = a_client(), person("compliance")
    write(1, mine)
    old, fresh = finished(owner, {"client": mine}), finished(owner, {"client": mine}, fmt="jsonl")
    AuditExport.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    stuck = AuditExport.objects.create(requester=owner, status=AuditExport.RUNNING, started_at=timezone.now())
    alive = AuditExport.objects.create(requester=owner, status=AuditExport.RUNNING, started_at=timezone.now())
    abandoned = exports / f".audit-log-20260101-000000-{stuck.pk.hex[:8]}.csv.gz.part"  # its worker was killed
    writing = exports / f".audit-log-20260101-000000-{alive.pk.hex[:8]}.csv.gz.part"
    abandoned.write_bytes(b"half")
    writing.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(abandoned, (two_hours_ago, two_hours_ago))

    assert delete_expired_exports.delay().get() >= 1
    old.refresh_from_db()
    assert old.file_name == "" and old.sha256  # the job stays, as a record of what was exported
    assert sorted(os.listdir(exports)) == sorted([fresh.file_name, writing.name])
    assert console(owner).get(f"/console/exports/{old.pk}/download/").status_code == 410
    stuck.refresh_from_db()
    alive.refresh_from_db()
    assert (stuck.status, alive.status) == (AuditExport.FAILED, AuditExport.RUNNING)
    assert "stopped before it finished" in stuck.error and stuck.finished_at
    assert settings.CELERY_BEAT_SCHEDULE["delete-expired-audit-exports"]["task"] == delete_expired_exports.name


# --- The trail --------------------------------------------------------------------------------------------


def test_the_request_and_each_download_are_in_the_trail():
    mine, owner = a_client(), person("compliance")
    write(1, mine)
    browser = console(owner)
    browser.get("/console/audit/export/", {"client": mine, "format": "csv", "background": "1"})
    export = AuditExport.objects.get(requester=owner)
    browser.get(f"/console/exports/{export.pk}/download/")
    api(owner).get(f"/api/v1/audit-exports/{export.pk}/download/")

    entries = list(AdminAction.objects.filter(object_id=str(export.pk)).order_by("seq"))
    assert [(e.actor, e.via, e.action, e.object_type) for e in entries] == [
        (owner.username, "console", "export", "audit.auditexport"),
        (owner.username, "console", "download", "audit.auditexport"),
        (owner.username, "api", "download", "audit.auditexport"),
    ]
    assert entries[0].changes == {"filter": [None, {"client": mine}], "format": [None, "csv"]}
    assert entries[0].object_repr == "audit-log (csv, 1 row)"
    assert entries[1].changes["sha256"] == [None, export.sha256]


# --- API --------------------------------------------------------------------------------------------------


def test_the_api_requests_lists_and_downloads_own_exports():
    mine, owner, colleague = a_client(), person("compliance"), person("compliance")
    write(3, mine)
    client = api(owner)
    answer = client.post(
        "/api/v1/audit-exports/", {"kind": "records", "format": "jsonl", "filters": {"client": mine}}, format="json"
    )
    assert answer.status_code == 202, answer.json()
    job = answer.json()
    assert (job["status"], job["percent"], job["rows_total"], job["rows_written"]) == ("done", 100, 3, 3)
    assert job["download_url"] == f"http://testserver/api/v1/audit-exports/{job['id']}/download/"
    api(colleague).post("/api/v1/audit-exports/", {"kind": "trail", "filters": {}}, format="json")

    listed = client.get("/api/v1/audit-exports/").json()
    assert [e["id"] for e in listed["results"]] == [job["id"]]
    assert client.get(f"/api/v1/audit-exports/{job['id']}/").json()["sha256"] == job["sha256"]
    assert api(colleague).get(f"/api/v1/audit-exports/{job['id']}/").status_code == 404
    file = client.get(job["download_url"])
    assert file.status_code == 200 and file["Content-Type"] == "application/gzip"
    lines = gzip.decompress(b"".join(file.streaming_content)).decode().splitlines()
    assert [json.loads(line)["client_slug"] for line in lines] == [mine] * 3
    assert AdminAction.objects.get(object_id=job["id"], action="export").via == "api"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "records", "filters": {"clinet": "acme"}}, "clinet"),
        ({"kind": "records", "filters": {"since": "yesterday"}}, "since"),
        ({"kind": "records", "filters": {"status": 42}}, "status"),
        ({"kind": "trail", "filters": {"client": "acme"}}, "client"),
    ],
)
def test_the_api_refuses_a_filter_it_does_not_know_or_cannot_read(body, field):
    answer = api(person("compliance")).post("/api/v1/audit-exports/", body, format="json")
    assert answer.status_code == 400 and field in answer.json()["filters"], answer.json()
    assert answer.json()["detail"].startswith(f"filters.{field}")


def test_the_api_refuses_an_unknown_kind_or_format_and_roles_without_export():
    client = api(person("compliance"))
    assert "kind" in client.post("/api/v1/audit-exports/", {"kind": "keys"}, format="json").json()
    assert "format" in client.post("/api/v1/audit-exports/", {"format": "xlsx"}, format="json").json()
    operator = api(person("operator"))
    assert operator.post("/api/v1/audit-exports/", {}, format="json").status_code == 403
    assert operator.get("/api/v1/audit-exports/").status_code == 403


def test_the_schema_documents_the_export_endpoints():
    schema = api(person("admin")).get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    assert set(paths["/api/v1/audit-exports/"]) - {"parameters"} == {"get", "post"}
    assert "202" in paths["/api/v1/audit-exports/"]["post"]["responses"]
    download = paths["/api/v1/audit-exports/{id}/download/"]["get"]["responses"]
    assert "application/gzip" in download["200"]["content"] and {"404", "409", "410"} <= set(download)


# --- Offline verification ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_task_written_file_verifies_offline_and_a_tampered_one_does_not(fmt, tmp_path):
    details = {"retries": 1, "failed_targets": ["http://a.example/v1"], "note": "=1+1"}
    records = write(4, a_client(), text='=HYPERLINK("http://evil") +1 -1 @x', output=HOSTILE, details=details)
    since = (records[0].created_at - timedelta(microseconds=1)).isoformat()
    export = finished(person("compliance"), {"since": since}, fmt=fmt)
    path = export_jobs.export_path(export)

    ok = subprocess.run([*VERIFY, str(path)], capture_output=True, text=True, env=offline_env())  # as auditors do
    assert ok.returncode == 0 and "The chain holds" in ok.stdout, ok.stdout + ok.stderr

    tampered = tmp_path / path.name
    original = gzip.decompress(path.read_bytes()).decode()
    assert original.count("failed_targets") == 4  # the details are chained, so the file carries them
    tampered.write_bytes(gzip.compress(original.replace("/v1/chat/completions", "/v1/other", 1).encode()))
    broken = subprocess.run([*VERIFY, str(tampered)], capture_output=True, text=True, env=offline_env())
    assert broken.returncode == 1 and "altered" in broken.stdout


def test_a_filtered_trail_export_verifies_record_by_record():
    actor = person(None, "actor")
    for i in (1, 2, 3):
        record_event(actor, "console", "create", "keys.apikey", i, f"key {i}", {"name": [None, f"=k{i}"]})
    export = finished(person("compliance"), {"actor": actor.username}, kind="trail")
    check = subprocess.run(
        [*VERIFY, "--records-only", str(export_jobs.export_path(export))], capture_output=True, text=True,
        env=offline_env(),
    )  # fmt: skip
    assert check.returncode == 0 and "3 checked" in check.stdout, check.stdout + check.stderr


# --- A real worker (production profile) ----------------------------------------------------------------------


@pytest.mark.skipif(not settings.REDIS_URL, reason="a worker needs the production profile's Redis broker")
def test_a_worker_writes_the_export_and_the_console_follows_it(exports, tmp_path):
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "gateway_project", "worker", "--pool", "threads", "-c", "1",
                "--loglevel", "WARNING", "-n", f"exports-{uuid.uuid4().hex[:8]}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=ROOT, env=server_env(CELERY_TASK_ALWAYS_EAGER="0", GATEWAY_EXPORT_DIR=exports),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            celery_app.conf.task_always_eager = False
            mine, owner = a_client(), person("compliance")
            write(3, mine)
            export = export_jobs.request_export(owner, "records", "csv", {"client": mine})
            assert export.status == "queued"

            def done():
                state = console(owner).get(f"/console/exports/{export.pk}/status/").json()
                return state if state["status"] in ("done", "failed") else None

            state = wait_for(done, seconds=30) or {}
            assert state.get("status") == "done" and state["percent"] == 100, log_path.read_text()
            export.refresh_from_db()
            assert len(read_file(export)) == 3
            offline = [*VERIFY, "--records-only", str(export_jobs.export_path(export))]
            assert subprocess.run(offline, env=offline_env()).returncode == 0
        finally:
            assert stop(worker, seconds=15) == 0, log_path.read_text()
