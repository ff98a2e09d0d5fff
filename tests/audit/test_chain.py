"""The request log is chained by hash: verification names the first altered, inserted or removed record."""

from __future__ import annotations

import csv
import io
import itertools
import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from audit.chain import key_ring, verify
from audit.chain_format import GENESIS, record_hash
from audit.models import AuditRecord
from audit.recorder import record_request
from gateway_project.writer import writer
from tests.audit.keyring import key_file
from tests.servers import ROOT, Gateway


@pytest.fixture(autouse=True)
def committed(live_db):
    """The writer commits and closes its connection, as in the gateway: no test transaction to roll back."""


def write(count: int, **fields) -> list[AuditRecord]:
    """``count`` records through the gateway's own recorder and writer, in one batch."""
    ids = []
    for i in range(count):
        request_id = uuid.uuid4().hex
        record_request(
            request_id=request_id, method="POST", path="/v1/chat/completions", status=200, latency_ms=12.3456 + i,
            client_id=7, client_slug="acme", api_key_id=9, key_prefix="agk_abc", agent="research", model="gpt-4o",
            input_tokens=10 + i, output_tokens=5, cost_usd=Decimal("0.000170400"), client_ip="::ffff:127.0.0.1",
            user_agent="pytest", input_text=fields.get("text", "hello"), output_text="=cmd|' /C calc'!A0",
        )  # fmt: skip
        ids.append(request_id)
    writer.flush_sync()
    return list(AuditRecord.objects.filter(request_id__in=ids).order_by("seq"))


def since(records):
    return records[0].created_at - timedelta(microseconds=1)


def test_records_are_chained_in_write_order_across_batches():
    first, second = write(3), write(2)
    for batch in (first, second):
        assert [r.seq for r in batch] == list(range(batch[0].seq, batch[0].seq + len(batch)))
    assert second[0].seq > first[-1].seq
    # Another process's spooled batch may be replayed between the two (the writer replays what it finds first):
    # its records take their place in the chain, which must still link through them.
    records = list(AuditRecord.objects.filter(seq__gte=first[0].seq, seq__lte=second[-1].seq).order_by("seq"))
    assert [r.seq for r in records] == list(range(first[0].seq, second[-1].seq + 1))
    assert all(r.prev_hash == p.record_hash for p, r in itertools.pairwise(records))
    before = AuditRecord.objects.filter(seq=records[0].seq - 1).first()
    assert records[0].prev_hash == (before.record_hash if before else GENESIS)
    result = verify(since=since(records))
    assert result.ok and result.checked >= 5, result.describe()


def test_an_edited_record_is_named():
    records = write(4)
    AuditRecord.objects.filter(pk=records[2].pk).update(status=500)
    result = verify(since=since(records))
    assert (result.finding.kind, result.finding.seq) == ("altered", records[2].seq)
    assert records[2].request_id in result.describe()


def test_an_edited_record_with_a_recomputed_hash_is_caught_at_the_next_one():
    records = write(4)
    forged = AuditRecord.objects.filter(pk=records[1].pk).values().get()
    forged["cost_usd"] = Decimal("0")
    AuditRecord.objects.filter(pk=records[1].pk).update(
        cost_usd=Decimal("0"), record_hash=record_hash(forged["prev_hash"], forged, keys=key_ring())
    )  # by someone holding the chain key: the next record's link still names it
    result = verify(since=since(records))
    assert (result.finding.kind, result.finding.seq) == ("inserted", records[2].seq)
    assert "the one before it was replaced" in result.describe()


def test_a_deleted_record_is_named_by_the_gap():
    records = write(5)
    AuditRecord.objects.filter(pk=records[2].pk).delete()
    result = verify(since=since(records))
    assert (result.finding.kind, result.finding.seq) == ("removed", records[3].seq)
    assert f"seq {records[2].seq}." in result.describe()


def test_an_inserted_record_is_named():
    records = write(3)
    fake = AuditRecord.objects.create(
        request_id=f"forged-{uuid.uuid4().hex}",
        created_at=records[1].created_at,
        method="GET",
        path="/v1/models",
        status=200,
    )
    result = verify(since=since(records))
    assert result.finding.kind == "inserted" and result.finding.request_id == fake.request_id


def test_an_inserted_record_with_a_seq_of_its_own_is_named():
    records = write(3)
    row = AuditRecord.objects.filter(pk=records[-1].pk).values().get()
    forged = f"forged-{uuid.uuid4().hex}"
    row.update(id=None, request_id=forged, seq=records[-1].seq + 1, prev_hash="f" * 64)
    row["record_hash"] = record_hash(row["prev_hash"], row, keys=key_ring())
    AuditRecord.objects.create(**row)
    result = verify(since=since(records))
    assert (result.finding.kind, result.finding.request_id) == ("inserted", forged)


def test_the_command_exits_1_and_names_the_record(capsys):
    records = write(3)
    call_command("verify_audit", "--since", since(records).isoformat())
    assert "The chain holds" in capsys.readouterr().out
    AuditRecord.objects.filter(pk=records[0].pk).update(output_preview="changed")
    with pytest.raises(SystemExit) as exit_:
        call_command("verify_audit", "--since", since(records).isoformat())
    assert exit_.value.code == 1 and records[0].request_id in capsys.readouterr().err
    with pytest.raises(Exception, match="needs a time zone"):
        call_command("verify_audit", "--since", "2026-12-01T10:00:00")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_verifies_offline_and_a_tampered_one_does_not(fmt, tmp_path, admin_console):
    records = write(4, text='=HYPERLINK("http://evil") +1 -1 @x')
    stamp = since(records).strftime("%Y-%m-%dT%H:%M:%S.%f")
    response = admin_console.get("/console/audit/export/", {"format": fmt, "since": stamp})
    body = b"".join(response.streaming_content).decode()
    exported = tmp_path / f"audit.{fmt}"
    exported.write_text(body)
    check = [sys.executable, str(ROOT / "audit" / "verify_export.py"), "--key-file", key_file(tmp_path), exported]
    ok = subprocess.run(check, capture_output=True, text=True)  # outside Django, as an auditor runs it
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "The chain holds" in ok.stdout
    if fmt == "jsonl":
        rows = [json.loads(line) for line in body.splitlines()]
        rows[1]["status"] = 201
        exported.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        rows = list(csv.DictReader(io.StringIO(body)))
        del rows[1]
        out = io.StringIO()
        writer_ = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer_.writeheader()
        writer_.writerows(rows)
        exported.write_text(out.getvalue())
    broken = subprocess.run(check, capture_output=True, text=True)
    assert broken.returncode == 1
    assert ("altered" if fmt == "jsonl" else "removed") in broken.stdout


def test_a_filtered_export_is_checked_record_by_record(tmp_path, admin_console):
    records = write(3)
    write(2)  # records of the same time range that the filter leaves out
    stamp = since(records).strftime("%Y-%m-%dT%H:%M:%S.%f")
    request_id = records[1].request_id
    response = admin_console.get(
        "/console/audit/export/", {"format": "jsonl", "since": stamp, "request_id": request_id}
    )
    exported = tmp_path / "one.jsonl"
    exported.write_bytes(b"".join(response.streaming_content))
    script = str(ROOT / "audit" / "verify_export.py")
    check = [sys.executable, script, "--key-file", key_file(tmp_path), "--records-only", exported]
    assert subprocess.run(check, capture_output=True, text=True).returncode == 0
    exported.write_text(exported.read_text().replace('"status": 200', '"status": 500'))
    failed = subprocess.run(check, capture_output=True, text=True)
    assert failed.returncode == 1 and request_id in failed.stdout


def test_compliance_verifies_from_the_console_and_the_api(compliance_console, compliance_api):
    records = write(3)
    page = compliance_console.get("/console/audit/verify/", {"since": since(records).isoformat()})
    assert page.status_code == 200 and "The chain holds" in page.content.decode()
    AuditRecord.objects.filter(pk=records[1].pk).update(agent="other")
    answer = compliance_api.get("/api/v1/audit/verify/", {"since": since(records).isoformat()}).json()
    assert answer["ok"] is False and answer["finding"]["kind"] == "altered"
    assert answer["finding"]["seq"] == records[1].seq
    assert compliance_api.get("/api/v1/audit/verify/", {"since": "yesterday"}).status_code == 400


def test_two_gateway_processes_writing_at_once_keep_one_chain(seeded, make_key):
    """Every request through two worker processes gets its place; the chain over them holds."""
    if not settings.REDIS_URL:
        pytest.skip("two processes share state through Redis; the embedded profile runs one")
    started = timezone.now()
    server = Gateway(workers=2, GATEWAY_FLUSH_SECONDS="0.01")
    try:
        raw, key = make_key()

        def one(_):
            with httpx.Client(base_url=server.url, timeout=30) as client:
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
                return client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {raw}"})

        with ThreadPoolExecutor(max_workers=16) as pool:
            assert {r.status_code for r in pool.map(one, range(120))} == {200}
    finally:
        server.stop()
    seqs = list(AuditRecord.objects.filter(api_key_id=key.pk).values_list("seq", flat=True))
    assert len(seqs) == 120 and None not in seqs and len(set(seqs)) == 120
    result = verify(since=started)
    assert result.ok, result.describe()
