"""One bad row never stops the log: a refused batch is split, and only the rows the database refuses are set aside."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from audit.chain import chain_rows, verify
from audit.models import AuditRecord, QuarantinedRow
from audit.quarantine import keep_refused_row
from billing.models import UsageRecord
from gateway_project.spool import Spool
from gateway_project.writer import BufferedWriter
from tests.audit.test_spool import audit_row

on_postgres = pytest.mark.skipif(not settings.REDIS_URL, reason="only PostgreSQL refuses this value")
# Rows no builder would make, each refused by the database: (what is wrong, the fields that make it so).
POISONS = [
    pytest.param({"input_tokens": -1}, id="negative-tokens"),
    pytest.param({"client_ip": "not-an-ip"}, id="client-ip-not-an-ip"),
    pytest.param({"path": "/v1/x\ud800"}, id="lone-surrogate"),
    pytest.param({"path": "/v1/x\x00y"}, id="nul-in-path", marks=on_postgres),
    pytest.param({"details": {"preview": "\u0000"}}, id="nul-in-details", marks=on_postgres),
    pytest.param({"input_tokens": 3_000_000_000}, id="token-overflow", marks=on_postgres),
    pytest.param({"path": "/" + "p" * 600}, id="too-long", marks=on_postgres),
]


@pytest.fixture(autouse=True)
def committed(live_db):
    """The writer commits, as in the gateway."""


@pytest.fixture
def writer(tmp_path, monkeypatch):
    """A writer of its own with its own spool, set up as the audit app sets up the gateway's."""
    monkeypatch.setitem(settings.GATEWAY, "SPOOL_DIR", tmp_path)
    return _new_writer()


def _new_writer() -> BufferedWriter:
    writer = BufferedWriter()
    writer.set_preparer(AuditRecord, chain_rows)
    writer.set_quarantine(keep_refused_row)
    return writer


def _ids(rows) -> list[str]:
    return [row["request_id"] for row in rows]


def _saved_in_order(ids) -> list[str]:
    return list(AuditRecord.objects.filter(request_id__in=ids).order_by("seq").values_list("request_id", flat=True))


@pytest.mark.parametrize("poison", POISONS)
def test_a_refused_row_is_quarantined_and_the_rest_of_its_batch_is_written(writer, poison):
    started = timezone.now()
    before, after = [audit_row() for _ in range(5)], [audit_row() for _ in range(4)]
    bad = audit_row(**poison)
    for row in [*before, bad, *after]:
        writer.add(AuditRecord, row)
    writer.flush_sync()
    assert _saved_in_order(_ids(before + after + [bad])) == _ids(before + after)
    kept = QuarantinedRow.objects.get(request_id=bad["request_id"])
    assert kept.model == "audit.AuditRecord" and kept.reason
    assert "seq" not in kept.row  # a failed try's chain fields name no record
    assert writer.quarantined_total == 1
    later = [audit_row() for _ in range(3)]
    for row in later:
        writer.add(AuditRecord, row)
    writer.flush_sync()
    assert _saved_in_order(_ids(later)) == _ids(later)
    assert verify(since=started).ok  # the chain holds over the rows written around the quarantined one


@on_postgres
def test_postgres_refuses_a_nul_and_names_it_as_the_reason(writer):
    bad = audit_row(path="/v1/x\x00y")
    writer.add(AuditRecord, audit_row())
    writer.add(AuditRecord, bad)
    writer.flush_sync()
    kept = QuarantinedRow.objects.get(request_id=bad["request_id"])
    assert "NUL" in kept.reason
    assert kept.row["path"]["$escaped"].encode("ascii").decode("unicode_escape") == "/v1/x\x00y"


def test_a_refused_usage_row_is_quarantined_and_its_audit_row_still_written(writer):
    request_id = uuid.uuid4().hex
    writer.add(AuditRecord, audit_row(request_id))
    writer.add(
        UsageRecord,
        {
            "request_id": request_id,
            "created_at": timezone.now(),
            "agent": "a",
            "model": "m",
            "input_tokens": -5,
            "output_tokens": 0,
        },
    )
    writer.flush_sync()
    assert AuditRecord.objects.filter(request_id=request_id).exists()
    assert QuarantinedRow.objects.get(request_id=request_id).model == "billing.UsageRecord"


def test_a_database_that_is_down_is_not_a_refusal_every_row_is_spooled_in_order(writer, monkeypatch, tmp_path):
    rows = [audit_row() for _ in range(4)]
    real_save = writer._save
    monkeypatch.setattr(writer, "_save", lambda batch: (_ for _ in ()).throw(OperationalError("connection refused")))
    for row in rows:
        writer.add(AuditRecord, row)
    writer.flush_sync()
    assert len(Spool(tmp_path).ready()) == 1 and writer.quarantined_total == 0
    assert not QuarantinedRow.objects.filter(request_id__in=_ids(rows)).exists()
    monkeypatch.setattr(writer, "_save", real_save)
    assert writer.replay_spool()
    assert _saved_in_order(_ids(rows)) == _ids(rows)


def test_a_spooled_poison_file_does_not_block_the_spool_after_a_restart(writer, tmp_path):
    started = timezone.now()
    spool = Spool(tmp_path)
    first, bad, second = [audit_row() for _ in range(3)], audit_row(input_tokens=-1), [audit_row() for _ in range(2)]
    poisoned = spool.put([(AuditRecord, row) for row in [*first, bad, *second]])
    with open(poisoned, "a", encoding="utf-8") as handle:  # and lines no process can read
        handle.write('{"model": "audit.AuditRecord", "row": {"request_id": \n')
        handle.write(json.dumps({"model": "gone.Model", "row": {}}) + "\n")
    with open(poisoned, "ab") as handle:
        handle.write(b"\xff\xfe not utf-8\n")
    behind = [audit_row() for _ in range(2)]
    spool.put([(AuditRecord, row) for row in behind])

    assert _new_writer().replay_spool()  # a process started after the poison file was left

    written = first + second + behind
    assert _saved_in_order(_ids([*written, bad])) == _ids(written)
    assert QuarantinedRow.objects.filter(request_id=bad["request_id"]).count() == 1
    lines = QuarantinedRow.objects.filter(model="", row__spool_file__startswith=poisoned.stem)
    assert lines.count() == 3 and all(line.reason.startswith("unreadable") for line in lines)
    assert spool.ready() == [] and not list(tmp_path.glob("*.claimed"))
    assert verify(since=started).ok


def test_a_batch_spooled_after_a_quarantine_is_not_quarantined_twice(writer):
    bad = audit_row(input_tokens=-1)
    writer.add(AuditRecord, bad)
    writer.flush_sync()
    writer.spool.put([(AuditRecord, dict(bad)), (AuditRecord, audit_row())])  # as if the connection died after it
    assert writer.replay_spool()
    assert QuarantinedRow.objects.filter(request_id=bad["request_id"]).count() == 1


def test_a_path_with_nul_is_refused_recorded_and_the_log_goes_on(gateway, make_key, audit_of):
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        refused = client.get(httpx.URL(f"{gateway.url}/v1/x%00y"))  # encoded: httpx sends it as it is
        assert 400 <= refused.status_code < 500
        record = audit_of(refused)
        assert record is not None, "the refused request left no audit record"
        assert "\x00" not in record.path and record.path.startswith("/v1/x")
        raw, _ = make_key()
        answered = client.get("/v1/models", headers={"Authorization": f"Bearer {raw}"})
    assert answered.status_code == 200
    assert audit_of(answered) is not None
    assert not QuarantinedRow.objects.filter(request_id=refused.headers["x-request-id"]).exists()


@pytest.fixture
def quarantined(live_db):
    row = QuarantinedRow.objects.create(
        model="audit.AuditRecord",
        request_id=uuid.uuid4().hex,
        row={"path": {"$escaped": "/v1/x\\x00y"}},
        reason="DataError: NUL",
    )
    yield row
    row.delete()


def test_admins_see_the_quarantine_and_its_count_on_the_log_and_the_dashboard(admin_console, quarantined):
    page = admin_console.get("/console/audit/quarantine/")
    assert page.status_code == 200 and quarantined.request_id in page.content.decode()
    for url in ("/console/audit/", "/console/"):
        banner = admin_console.get(url).content.decode()
        assert 'id="quarantine-banner"' in banner and "/console/audit/quarantine/" in banner


def test_only_admins_open_the_quarantine(compliance_console, nobody_console, quarantined):
    assert compliance_console.get("/console/audit/quarantine/").status_code == 403
    assert nobody_console.get("/console/audit/quarantine/").status_code == 403
    assert 'id="quarantine-banner"' in compliance_console.get("/console/audit/").content.decode()  # counted for all


def test_the_api_lists_the_quarantine_to_admins_only(admin_api, compliance_api, quarantined):
    listed = admin_api.get("/api/v1/audit-quarantine/", {"request_id": quarantined.request_id})
    assert listed.status_code == 200 and listed.json()["count"] == 1
    assert listed.json()["results"][0]["row"] == {"path": {"$escaped": "/v1/x\\x00y"}}
    assert admin_api.post("/api/v1/audit-quarantine/", {}).status_code == 405
    assert compliance_api.get("/api/v1/audit-quarantine/").status_code == 403


def test_a_row_the_quarantine_refuses_too_is_kept_in_a_file_and_its_prompt_stays_out_of_the_log(writer, caplog):
    """The last resort keeps the row where a person can read it (``<spool>/rejected/``, the owner's only), not in
    the log: its previews are a prompt and an answer."""
    from django.db import DataError

    def refusing(label, row, reason):
        raise DataError("value too long for the quarantine")

    writer.set_quarantine(refusing)
    good = audit_row()
    bad = audit_row(input_tokens=-1, input_preview="SECRET-PROMPT-1234", output_preview="SECRET-ANSWER")
    writer.add(AuditRecord, good)
    writer.add(AuditRecord, bad)
    with caplog.at_level("INFO", logger="gateway"):
        writer.flush_sync()
    assert _saved_in_order(_ids([good, bad])) == _ids([good])
    # Not even in the database's reason: PostgreSQL's DETAIL and CONTEXT quote the refused row.
    assert "SECRET" not in caplog.text and "the quarantine refused it too (DataError" in caplog.text
    assert "the row is kept in" in caplog.text
    [path] = (settings.GATEWAY["SPOOL_DIR"] / "rejected").iterdir()
    assert path.stat().st_mode & 0o077 == 0 and path.parent.stat().st_mode & 0o077 == 0
    kept = json.loads(path.read_text())
    assert kept["model"] == "audit.AuditRecord" and "quarantine refused it too" in kept["reason"]
    assert kept["row"]["request_id"] == bad["request_id"] and kept["row"]["input_preview"] == "SECRET-PROMPT-1234"
    assert Spool(settings.GATEWAY["SPOOL_DIR"]).ready() == []  # never replayed
    assert writer.quarantined_total == 1
