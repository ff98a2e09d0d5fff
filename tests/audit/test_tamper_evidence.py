"""Tamper evidence that survives someone who can write the database (issue 13).

Every attack here is made the way a database administrator would make it, with SQL
or the ORM and without the keys, which are never in the database: delete the newest
records, forge an archived run to hide a cut, rewrite a record and recompute its
hashes the unkeyed way. Each is named by verification.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection
from django.test import Client as Browser
from django.utils import timezone
from rest_framework.test import APIClient

from audit import checkpoints, export_jobs
from audit.chain import REQUEST_CHAIN, TRAIL_CHAIN, key_ring, verify
from audit.chain_format import GENESIS, REQUESTS, key_id
from audit.models import AdminAction, ArchivedRun, AuditArchive, AuditExport, AuditRecord
from audit.recorder import record_request
from audit.retention import apply_retention
from audit.tasks import publish_audit_checkpoint
from audit.trail import record_event
from gateway_project.writer import writer
from tests.servers import ROOT

KEY_A = "a" * 40
KEY_B = "b" * 40


@pytest.fixture(autouse=True)
def tamper_setup(live_db, settings, tmp_path):
    """Empty chains (they start again at seq 1) and checkpoints and archives in directories of the test's own."""
    settings.GATEWAY_EXPORT_DIR = tmp_path / "exports"
    settings.GATEWAY_ARCHIVE_DIR = tmp_path / "archive"
    settings.GATEWAY_AUDIT_RETENTION_DAYS = 90
    _empty()
    yield
    _empty()


def _empty():
    ArchivedRun.objects.all().delete()
    AuditArchive.objects.all().delete()
    AuditRecord.objects.all().delete()
    AdminAction.objects.all().delete()


def write(count: int, age_days: float = 0) -> list[AuditRecord]:
    """``count`` records through the gateway's recorder and writer, ``age_days`` old."""
    ids, now = [], timezone.now()
    for i in range(count):
        request_id = uuid.uuid4().hex
        row = record_request(
            request_id=request_id, method="POST", path="/v1/chat/completions", status=200, latency_ms=10.0 + i,
            client_id=None, client_slug="", api_key_id=3, key_prefix="agk_tamper", agent="research", model="gpt-4o",
            input_tokens=10, output_tokens=5, cost_usd=Decimal("0.000170400"), client_ip="10.0.0.1",
            user_agent="pytest", input_text="hello", output_text="hi",
        )  # fmt: skip
        row["created_at"] = now - timedelta(days=age_days)  # the writer has not taken it yet
        ids.append(request_id)
    writer.flush_sync()
    return list(AuditRecord.objects.filter(request_id__in=ids).order_by("seq"))


def person(role: str | None):
    user = get_user_model().objects.create_user(f"{role or 'nobody'}-{uuid.uuid4().hex[:8]}")
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def api_as(role: str | None) -> APIClient:
    """The management API as a user of that role (committed data: the writer closes its connection)."""
    api = APIClient()
    api.force_authenticate(person(role))
    return api


def console_as(role: str | None) -> Browser:
    browser = Browser()
    browser.force_login(person(role))
    return browser


class Person:
    pk = 4242

    def get_username(self):
        return "ada"


def act(count: int) -> list[AdminAction]:
    return [record_event(Person(), "api", "update", "keys.client", i, f"client {i}", {"name": ["a", "b"]})
            for i in range(count)]  # fmt: skip


def sql(statement: str, params=()) -> int:
    """What a database administrator runs: plain SQL, no keys."""
    with connection.cursor() as cursor:
        cursor.execute(statement, list(params))
        return cursor.rowcount


def published() -> checkpoints.Checkpoint:
    result = checkpoints.publish()
    assert result.checkpoint is not None, result.describe()
    return result.checkpoint


# --- A clean chain ------------------------------------------------------------------------------------


def test_a_clean_chain_verifies_and_its_head_is_at_the_checkpoint():
    records = write(3)
    act(2)
    checkpoint = published()
    assert checkpoint.body["chains"]["records"] == {"seq": 3, "hash": records[-1].record_hash, "keyed_from": 1}
    assert checkpoint.body["chains"]["trail"]["seq"] == 2
    write(2)  # a head past the checkpoint is as it should be
    for chain in (REQUEST_CHAIN, TRAIL_CHAIN):
        result = verify(chain=chain)
        assert result.ok, result.describe()
        assert "at or past the last checkpoint" in result.describe()
    assert all(r.chain_key_id == key_ring().current_id for r in AuditRecord.objects.all())
    assert all(a.chain_key_id == key_ring().current_id for a in AdminAction.objects.all())


def test_without_a_checkpoint_verification_says_the_head_is_not_pinned():
    write(2)
    result = verify()
    assert result.ok and "No checkpoint has been published yet" in result.describe()


# --- Deleting the newest records ---------------------------------------------------------------------


@pytest.mark.parametrize("chain", [REQUEST_CHAIN, TRAIL_CHAIN], ids=lambda chain: chain.name)
def test_deleting_the_newest_records_is_named_behind_the_checkpoint(chain, capsys):
    write(5)
    act(5)
    pinned = published().pin(chain)
    table = chain.model._meta.db_table
    assert sql(f"DELETE FROM {table} WHERE seq > %s", [pinned.seq - 2]) >= 2  # the trail's includes the checkpoint's
    result = verify(chain=chain)
    assert (result.finding.kind, result.finding.seq) == ("removed", pinned.seq - 2)
    assert f"head seq {pinned.seq - 2} is behind checkpoint seq {pinned.seq}" in result.describe()
    with pytest.raises(SystemExit) as exit_:
        call_command("verify_audit", "--chain", chain.name)
    assert exit_.value.code == 1 and f"is behind checkpoint seq {pinned.seq}" in capsys.readouterr().err


def test_records_deleted_and_written_again_past_the_checkpoint_are_named():
    write(5)
    pinned = published().pin(REQUEST_CHAIN)
    sql("DELETE FROM audit_auditrecord WHERE seq > 3")
    write(4)  # the gateway goes on from seq 3: the head is past seq 5 again, with other records there
    found = verify().finding
    assert (found.kind, found.seq) == ("checkpoint", 5)
    assert "no longer has the hash the checkpoint" in found.message and pinned.time in found.message


def test_the_checkpoint_task_refuses_to_pin_a_head_that_went_back_until_an_operator_accepts_it(capsys):
    write(4)
    published()
    sql("DELETE FROM audit_auditrecord WHERE seq > 2")
    refused = publish_audit_checkpoint()
    assert refused["published"] is False and "head seq 2 is behind checkpoint seq 4" in refused["message"]
    assert AdminAction.objects.filter(object_type="audit.checkpoint", action="refuse").exists()
    assert checkpoints.latest().pin(REQUEST_CHAIN).seq == 4  # the file still pins what was there
    with pytest.raises(SystemExit):
        call_command("audit_checkpoint")
    call_command("audit_checkpoint", "--accept", "restored the backup of the 1st")
    accepted = checkpoints.latest()
    assert accepted.pin(REQUEST_CHAIN).seq == 2
    assert accepted.body["accepted"]["reason"] == "restored the backup of the 1st"
    assert "behind checkpoint seq 4" in accepted.body["accepted"]["findings"][0]
    assert verify().ok


# --- Forging an archived run ----------------------------------------------------------------------------


def _cut(records: list[AuditRecord], first: int, last: int) -> dict:
    """Delete records seq first..last by hand; the run row a forger would add to close the gap."""
    by_seq = {r.seq: r for r in records}
    sql("DELETE FROM audit_auditrecord WHERE seq BETWEEN %s AND %s", [first, last])
    return {"first_seq": first, "last_seq": last, "prev_hash": by_seq[first - 1].record_hash,
            "last_hash": by_seq[last].record_hash}  # fmt: skip


def test_a_forged_run_with_an_archive_of_its_own_is_named():
    records = write(6)
    run = _cut(records, 3, 4)
    forged = AuditArchive.objects.create(
        file_name="audit-records-20260101-000000-seq3-4.jsonl.gz", sha256="0" * 64, records=2, first_seq=3, last_seq=4
    )
    ArchivedRun.objects.create(archive=forged, **run)
    found = verify().finding
    assert (found.kind, found.seq) == ("archive", 3)
    assert "seq 3 to 4" in found.message and "is missing" in found.message


def test_a_forged_run_added_to_a_real_archive_is_named():
    old = write(2, age_days=100)
    records = old + write(5)
    assert apply_retention().archived == 2
    archive = AuditArchive.objects.get()
    assert verify().ok, verify().describe()  # linked from the archived prefix, whose file bears it out
    ArchivedRun.objects.create(archive=archive, **_cut(records, 4, 5))
    found = verify().finding
    assert (found.kind, found.seq) == ("archive", 4)
    assert archive.file_name in found.message and "does not hold the run seq 4 to 5 whole" in found.message


def test_a_forged_run_at_the_start_of_the_chain_is_named():
    records = write(4)
    sql("DELETE FROM audit_auditrecord WHERE seq <= 2")
    forged = AuditArchive.objects.create(file_name="audit-records-20260101-000000-seq1-2.jsonl.gz", sha256="0" * 64)
    ArchivedRun.objects.create(archive=forged, first_seq=1, last_seq=2, prev_hash=GENESIS,
                               last_hash=records[1].record_hash)  # fmt: skip
    assert verify().finding.kind == "archive"


# --- Rewriting a record -----------------------------------------------------------------------------------


def _rewrite_unkeyed(from_seq: int, keep_key_id: bool) -> None:
    """Change record ``from_seq`` and recompute its hash and every later one's the unkeyed way (format 1)."""
    prev = AuditRecord.objects.get(seq=from_seq - 1).record_hash if from_seq > 1 else GENESIS
    rows = AuditRecord.objects.filter(seq__gte=from_seq).order_by("seq").values()
    for row in rows:
        if row["seq"] == from_seq:
            row["status"] = 500
        kid = row["chain_key_id"]
        row.update(prev_hash=prev, chain_key_id="")
        prev = REQUESTS.record_hash(prev, row)  # SHA-256: all anyone without the key can compute
        columns = "status = %s, prev_hash = %s, record_hash = %s, chain_key_id = %s"
        sql(f"UPDATE audit_auditrecord SET {columns} WHERE id = %s",
            [row["status"], row["prev_hash"], prev, kid if keep_key_id else "", row["id"]])  # fmt: skip


def test_a_record_rewritten_with_recomputed_unkeyed_hashes_is_a_hash_mismatch():
    write(5)
    _rewrite_unkeyed(3, keep_key_id=True)
    found = verify().finding
    assert (found.kind, found.seq) == ("altered", 3) and "no longer matches its hash" in found.message


def test_a_record_rewritten_as_an_unkeyed_one_after_keyed_ones_is_named():
    write(5)
    _rewrite_unkeyed(3, keep_key_id=False)
    found = verify().finding
    assert (found.kind, found.seq) == ("altered", 3) and "unkeyed SHA-256" in found.message
    since = AuditRecord.objects.get(seq=3).created_at  # a range starting at it: the record before it is keyed
    assert verify(since=since).finding.seq == 3


def test_records_chained_before_the_key_verify_and_the_keyed_chain_commits_to_them():
    """The migration boundary: unkeyed records stay valid; the first keyed one links to the last unkeyed hash."""
    legacy = write(3)
    _rewrite_unkeyed_in_place()
    keyed = write(3)
    assert [r.chain_key_id for r in AuditRecord.objects.order_by("seq")] == [""] * 3 + [key_ring().current_id] * 3
    assert keyed[0].prev_hash == AuditRecord.objects.get(seq=legacy[-1].seq).record_hash
    assert verify().ok, verify().describe()
    assert published().pin(REQUEST_CHAIN).keyed_from == 4
    # Rewriting every keyed record unkeyed leaves a chain that links: the checkpoint's boundary names it.
    _rewrite_unkeyed(4, keep_key_id=False)
    found = verify().finding
    assert (found.kind, found.seq) == ("altered", 4) and "keyed from seq 4" in found.message


def _rewrite_unkeyed_in_place() -> None:
    """Recompute every record's hash unkeyed from the start, content unchanged (what the pre-issue-13 chain held)."""
    prev = GENESIS
    for row in AuditRecord.objects.order_by("seq").values():
        row.update(prev_hash=prev, chain_key_id="")
        prev = REQUESTS.record_hash(prev, row)
        AuditRecord.objects.filter(pk=row["id"]).update(prev_hash=row["prev_hash"], record_hash=prev, chain_key_id="")


# --- Keys --------------------------------------------------------------------------------------------------


def test_rotating_the_chain_key_keeps_old_records_verifying(settings):
    settings.GATEWAY_AUDIT_CHAIN_KEYS = [KEY_A.encode()]
    old = write(2)
    settings.GATEWAY_AUDIT_CHAIN_KEYS = [KEY_B.encode(), KEY_A.encode()]  # newest first
    new = write(2)
    assert {r.chain_key_id for r in old} == {key_id(KEY_A.encode())}
    assert {r.chain_key_id for r in new} == {key_id(KEY_B.encode())}
    assert new[0].prev_hash == old[-1].record_hash
    assert verify().ok, verify().describe()
    settings.GATEWAY_AUDIT_CHAIN_KEYS = [KEY_B.encode()]  # the old key dropped from the ring
    found = verify().finding
    assert (found.kind, found.seq) == ("key", old[0].seq) and key_id(KEY_A.encode()) in found.message


def test_a_hash_made_with_another_key_is_a_mismatch(settings):
    settings.GATEWAY_AUDIT_CHAIN_KEYS = [KEY_A.encode()]
    write(3)
    settings.GATEWAY_AUDIT_CHAIN_KEYS = [KEY_B.encode()]
    sql("UPDATE audit_auditrecord SET chain_key_id = %s", [key_id(KEY_B.encode())])
    assert verify().finding.kind == "altered"


def test_an_embedded_chain_key_is_generated_into_var_for_its_owner_only():
    if os.environ.get("GATEWAY_AUDIT_CHAIN_KEY") or os.environ.get("GATEWAY_AUDIT_CHAIN_KEY_FILE"):
        pytest.skip("the key is given by the environment")
    for name in ("audit_chain_key", "audit_checkpoint_key"):
        path = django_settings.VAR_DIR / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _django_setup(env: dict) -> subprocess.CompletedProcess:
    code = "import django; django.setup()"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)


def test_a_deployed_gateway_without_the_keys_fails_loudly():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GATEWAY_AUDIT_", "DATABASE_URL"))}
    env.update(
        DJANGO_DEBUG="0", DJANGO_ALLOWED_HOSTS="gateway.example.com", DJANGO_SECRET_KEY="s" * 50,
        GATEWAY_CREDENTIAL_KEYS=base64.urlsafe_b64encode(b"k" * 32).decode(),
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
    )  # fmt: skip
    keys = {"GATEWAY_AUDIT_CHAIN_KEY": "c" * 40, "GATEWAY_AUDIT_CHECKPOINT_KEY": "0f" * 32}
    for missing in keys:
        run = _django_setup({**env, **{name: value for name, value in keys.items() if name != missing}})
        assert run.returncode != 0 and f"{missing} (or {missing}_FILE) must be set" in run.stderr
    run = _django_setup({**env, **keys})
    assert run.returncode == 0, run.stderr


# --- The checkpoint file and the endpoint ----------------------------------------------------------------


def test_beat_publishes_a_checkpoint_to_the_file_and_the_trail_on_its_interval():
    entry = django_settings.CELERY_BEAT_SCHEDULE["publish-audit-checkpoint"]
    assert entry["schedule"] == django_settings.GATEWAY_AUDIT_CHECKPOINT_SECONDS
    write(1)
    assert publish_audit_checkpoint()["published"] and publish_audit_checkpoint()["published"]
    path = checkpoints.checkpoint_path()
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0  # not for every account on the host
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(checkpoints.read(line) for line in lines)
    entries = AdminAction.objects.filter(object_type="audit.checkpoint", action="checkpoint").order_by("seq")
    assert [e.changes["checkpoint"][1] for e in entries] == [json.loads(line) for line in lines]
    assert entries[0].actor == "system"


def test_a_checkpoint_file_altered_by_hand_is_named():
    write(2)
    published()
    path = checkpoints.checkpoint_path()
    line = json.loads(path.read_text())
    line["payload"] = line["payload"].replace('"seq":2', '"seq":1')
    path.write_text(json.dumps(line) + "\n")
    found = verify().finding
    assert found.kind == "checkpoint" and "signature does not verify" in found.message


def _public_key() -> Ed25519PublicKey:
    """The key a monitor pins, as the command prints it."""
    out = subprocess.run(
        [sys.executable, "manage.py", "audit_checkpoint", "--public-key"], cwd=ROOT, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    raw = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("raw, base64: "))
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(raw))


def test_the_checkpoint_endpoint_is_signed_with_the_published_key_and_fails_when_altered():
    compliance = api_as("compliance")
    assert compliance.get("/api/v1/audit/checkpoint/").status_code == 404  # none yet
    records = write(3)
    published()
    answer = compliance.get("/api/v1/audit/checkpoint/")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    public = _public_key()
    public.verify(base64.b64decode(body["signature"]), body["payload"].encode())  # raises if it does not verify
    checkpoint = json.loads(body["payload"])
    assert checkpoint == body["checkpoint"] and checkpoint["chains"]["records"]["hash"] == records[-1].record_hash
    assert body["algorithm"] == "Ed25519" and body["age_seconds"] < 60
    altered = body["payload"].replace('"seq":3', '"seq":30')
    with pytest.raises(InvalidSignature):
        public.verify(base64.b64decode(body["signature"]), altered.encode())
    forged = bytearray(base64.b64decode(body["signature"]))
    forged[0] ^= 1
    with pytest.raises(InvalidSignature):
        public.verify(bytes(forged), body["payload"].encode())


def test_a_monitor_reads_the_checkpoint_with_its_token_and_nothing_else(settings):
    settings.GATEWAY_AUDIT_MONITOR_TOKEN = token = "m" * 40
    write(1)
    published()
    monitor = APIClient()
    monitor.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert monitor.get("/api/v1/audit/checkpoint/").status_code == 200
    assert monitor.get("/api/v1/audit/").status_code in (401, 403)
    assert monitor.get("/api/v1/audit/verify/").status_code in (401, 403)
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION=f"Bearer {'x' * 40}")
    assert wrong.get("/api/v1/audit/checkpoint/").status_code in (401, 403)
    assert APIClient().get("/api/v1/audit/checkpoint/").status_code in (401, 403)
    assert api_as("operator").get("/api/v1/audit/checkpoint/").status_code == 403
    assert api_as("admin").get("/api/v1/audit/checkpoint/").status_code == 200
    settings.GATEWAY_AUDIT_MONITOR_TOKEN = ""  # no token set: none is accepted
    assert APIClient().get("/api/v1/audit/checkpoint/", HTTP_AUTHORIZATION="Bearer ").status_code in (401, 403)


def test_the_api_and_the_console_name_what_verification_found():
    write(4)
    published()
    sql("DELETE FROM audit_auditrecord WHERE seq > 2")
    answer = api_as("compliance").get("/api/v1/audit/verify/").json()
    assert answer["ok"] is False and answer["finding"]["kind"] == "removed"
    assert "head seq 2 is behind checkpoint seq 4" in answer["message"]
    page = console_as("compliance").get("/console/audit/verify/")
    assert "head seq 2 is behind checkpoint seq 4" in page.content.decode()


# --- Files the database names ------------------------------------------------------------------------------


def test_a_database_row_cannot_point_a_download_or_the_sweep_at_another_file():
    write(1)
    published()
    path = checkpoints.checkpoint_path()
    export = AuditExport.objects.create(status=AuditExport.DONE, file_name=path.name,
                                        expires_at=timezone.now() - timedelta(hours=1))  # fmt: skip
    with pytest.raises(FileNotFoundError):
        export_jobs.export_path(export)
    export_jobs.delete_expired()
    assert path.exists()  # the sweep left the checkpoints alone
    key_file = django_settings.VAR_DIR / "audit_chain_key"
    archive = AuditArchive.objects.create(file_name=str(key_file), sha256="0" * 64)
    answer = console_as("admin").get(f"/console/audit/retention/{archive.pk}/download/")
    assert answer.status_code == 404  # not the key file's content
    assert "missing" in api_as("admin").get(f"/api/v1/audit-archives/{archive.pk}/verify/").json()["message"]
