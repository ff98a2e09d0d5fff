"""The admin-action trail is chained by hash like the request log, and checked the same ways."""

from __future__ import annotations

import csv
import io
import itertools
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from audit.chain import TRAIL_CHAIN, key_ring, verify
from audit.chain_format import REQUESTS, TRAIL
from audit.models import AdminAction
from audit.trail import record_event
from keys.models import Client
from tests.audit.keyring import key_file
from tests.servers import ROOT


@pytest.fixture(autouse=True)
def committed(live_db):
    """The chain is read back as other processes would see it: committed."""


class Person:
    def __init__(self, name):
        self.pk = 4242
        self._name = name

    def get_username(self):
        return self._name


def actions(count: int, actor: str = "ada") -> list[AdminAction]:
    tag = uuid.uuid4().hex[:8]
    made = [
        record_event(Person(actor), "api", "update", "keys.client", i, f"client {tag}-{i}",
                     {"name": [f"old {i}", f"=new {i}, \"quoted\""], "limit": [1.5, 2]})
        for i in range(count)
    ]  # fmt: skip
    return list(AdminAction.objects.filter(pk__in=[a.pk for a in made]).order_by("seq"))


def since(records):
    return records[0].created_at - timedelta(microseconds=1)


def test_each_action_joins_the_chain_after_the_one_before():
    made = actions(4)
    assert [a.seq for a in made] == list(range(made[0].seq, made[0].seq + 4))
    assert all(b.prev_hash == a.record_hash for a, b in itertools.pairwise(made))
    result = verify(since(made), chain=TRAIL_CHAIN)
    assert result.ok and result.checked >= 4


def test_an_altered_a_removed_and_an_inserted_action_are_named():
    made = actions(5)
    AdminAction.objects.filter(pk=made[1].pk).update(changes={"name": ["old", "whitewashed"]})
    found = verify(since(made), chain=TRAIL_CHAIN).finding
    assert (found.kind, found.seq) == ("altered", made[1].seq)

    made = actions(5)
    AdminAction.objects.filter(pk=made[2].pk).delete()
    found = verify(since(made), chain=TRAIL_CHAIN).finding
    assert (found.kind, found.seq) == ("removed", made[3].seq)
    assert f"seq {made[2].seq}" in found.message

    made = actions(3)
    forged = AdminAction.objects.create(actor="mallory", via="console", action="delete", object_type="keys.apikey")
    found = verify(since(made), chain=TRAIL_CHAIN).finding
    assert found.kind == "inserted" and found.request_id == str(forged.pk)


def test_a_change_through_the_console_is_chained(admin_console):
    client = Client.objects.create(name="Chained", slug=f"chained-{uuid.uuid4().hex[:8]}")
    response = admin_console.post(f"/console/clients/{client.pk}/edit/", {"name": "Chained too", "slug": client.slug})
    assert response.status_code in (200, 302)
    entry = AdminAction.objects.filter(object_type="keys.client", object_id=str(client.pk), via="console").get()
    assert entry.seq and entry.record_hash == TRAIL.record_hash(entry.prev_hash, vars(entry), key_ring())


def test_the_command_checks_both_chains_and_exits_1_when_the_trail_is_broken(capsys):
    made = actions(2)
    call_command("verify_audit", "--since", since(made).isoformat())
    out = capsys.readouterr().out
    assert "Request log:" in out and "Admin-action trail: The chain holds" in out
    AdminAction.objects.filter(pk=made[0].pk).update(actor="someone else")
    with pytest.raises(SystemExit) as exit_:
        call_command("verify_audit", "--chain", "trail", "--since", since(made).isoformat())
    assert exit_.value.code == 1 and f"seq {made[0].seq}" in capsys.readouterr().err


def test_compliance_verifies_the_trail_in_the_console_and_the_api(compliance_console, compliance_api):
    made = actions(2)
    page = compliance_console.get("/console/audit/verify/", {"chain": "trail", "since": since(made).isoformat()})
    assert page.status_code == 200 and "Admin-action trail: The chain holds" in page.content.decode()
    assert compliance_console.get("/console/audit/verify/", {"chain": "nope"}).status_code == 400
    AdminAction.objects.filter(pk=made[1].pk).update(object_repr="nothing to see")
    answer = compliance_api.get("/api/v1/admin-actions/verify/", {"since": since(made).isoformat()}).json()
    assert answer["ok"] is False and answer["finding"]["seq"] == made[1].seq


def test_an_exported_trail_verifies_offline_and_a_tampered_one_does_not(admin_console, tmp_path):
    made = actions(3, actor="=HYPERLINK(1)")
    stamp = since(made).strftime("%Y-%m-%dT%H:%M:%S.%f")
    response = admin_console.get("/console/admin-actions/export/", {"format": "csv", "since": stamp})
    body = b"".join(response.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [int(r["seq"]) for r in rows[:3]] == [a.seq for a in made]
    assert rows[3]["action"] == "export"  # the export itself is in the trail, before its first byte
    assert rows[0]["actor"] == "'=HYPERLINK(1)"  # neutralised for spreadsheets, undone by the checker
    exported = tmp_path / "trail.csv"
    exported.write_text(body)
    check = [sys.executable, str(ROOT / "audit" / "verify_export.py"), "--key-file", key_file(tmp_path), exported]
    ok = subprocess.run(check, capture_output=True, text=True)
    assert ok.returncode == 0 and "The chain holds" in ok.stdout, ok.stdout + ok.stderr
    exported.write_text(body.replace("old 1", "old 9"))
    broken = subprocess.run(check, capture_output=True, text=True)
    assert broken.returncode == 1 and "altered" in broken.stdout


def test_concurrent_admins_keep_one_chain():
    """Eight writers at once (PostgreSQL: one advisory lock orders them) leave no gap and no fork."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite writes one transaction at a time; the lock matters on PostgreSQL")
    started = timezone.now()

    def one(i):
        try:
            return record_event(Person(f"admin-{i}"), "api", "create", "keys.client", i, f"c{i}").pk
        finally:
            connections.close_all()

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(40)))
    seqs = sorted(AdminAction.objects.filter(pk__in=ids).values_list("seq", flat=True))
    assert seqs == list(range(seqs[0], seqs[0] + 40))
    assert verify(started, chain=TRAIL_CHAIN).ok


def test_a_field_added_later_leaves_older_hashes_alone():
    row = {"seq": 1, "request_id": "r", "created_at": timezone.now(), "method": "GET", "path": "/", "status": 200}
    without = REQUESTS.record_hash("0" * 64, row)
    assert REQUESTS.record_hash("0" * 64, {**row, "target": ""}) == without
    assert REQUESTS.record_hash("0" * 64, {**row, "target": "http://a"}) != without


def test_details_are_written_chained_and_verified():
    """The request log's JSON details (retries, fallbacks, WebSocket traffic) go through the writer and the chain."""
    from audit.models import AuditRecord
    from audit.recorder import record_request
    from gateway_project.writer import writer

    started = timezone.now()
    request_id = uuid.uuid4().hex
    details = {"attempts": 2, "failed_targets": [{"target": "http://a", "error": "503"}]}
    record_request(request_id=request_id, method="POST", path="/v1/x", status=200, details=details)
    writer.flush_sync()
    record = AuditRecord.objects.get(request_id=request_id)
    assert record.details == details
    assert verify(started).ok
    AuditRecord.objects.filter(pk=record.pk).update(details={"attempts": 1})
    assert verify(started).finding.kind == "altered"


def test_an_invalid_export_filter_is_refused_not_widened(admin_console):
    for url in ("/console/audit/export/", "/console/admin-actions/export/"):
        response = admin_console.get(url, {"format": "csv", "since": "last tuesday"})
        assert response.status_code == 400 and "since" in response.content.decode()


def test_a_text_that_starts_with_the_guards_quote_survives_the_round_trip(tmp_path):
    """A preview that really begins with a quote and an equals sign is exported and verified exactly."""
    from audit.exports import csv_cell
    from audit.verify_export import _uncell

    for text in ("'=1+1", "=1+1", "'plain", "plain", "''"):
        assert _uncell(csv_cell(text)) == text
