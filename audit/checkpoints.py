"""Signed checkpoints of the audit chains' heads, published outside the database.

The keyed chains (``audit.chain``) stop anyone without the chain key from rewriting a
record, but someone who can write the database can still delete the newest records:
what is left is a shorter chain that verifies. A checkpoint pins each chain's head
(its seq and hash, and the seq from which it is keyed) at a moment, signed with an
Ed25519 key that is not in the database either, so verification can say "the head is
behind the last checkpoint" or "the record the checkpoint pinned no longer hashes to
what it pinned".

Beat publishes one every ``GATEWAY_AUDIT_CHECKPOINT_SECONDS`` (``publish``): a line
appended to ``audit-checkpoints.jsonl`` in the export directory, and an entry in the
admin-action trail. The latest is served, as signed, at ``GET /api/v1/audit/checkpoint/``
for an external monitor, which verifies it with the public key alone (Ed25519 rather
than HMAC: a monitor holding an HMAC key could forge checkpoints itself).

A head that has gone back, or a pinned record that changed, is never checkpointed
over: ``publish`` refuses (logged, and recorded in the trail) until an operator who
holds the checkpoint key accepts the new head on purpose (``manage.py audit_checkpoint
--accept REASON``, after restoring a backup, say); the accepting checkpoint says so,
with the reason and what it found.

Each line of the file is ``{"payload": "<JSON text>", "algorithm": "Ed25519", "key_id":
"<16 hex>", "signature": "<base64>"}``; the signature is over the payload's UTF-8 bytes,
and the payload is ``{"version": 1, "time": ISO 8601, "chains": {"records": {"seq",
"hash", "keyed_from"}, "trail": {...}}}`` (plus ``"accepted"`` when an operator accepted it).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.utils import timezone

from audit.archive_check import record_at
from audit.chain import CHAINS, Chain, Crossed, key_ring
from audit.chain_format import CHAIN_FIELDS, GENESIS, KEY_FIELD, Finding, KeyRing, UnknownKey
from audit.trail import record_event

log = logging.getLogger("gateway.audit")

FILE_NAME = "audit-checkpoints.jsonl"
ALGORITHM = "Ed25519"
VERSION = 1
OBJECT_TYPE = "audit.checkpoint"  # how the trail names checkpoints
READ_BACK = 4096  # bytes read at a time from the end of the file to find its last line


class CheckpointError(Exception):
    """The checkpoint file's last line is not a checkpoint this gateway's keys verify."""


class _System:
    """The actor of the entries the checkpoint task makes in the trail."""

    pk = None

    @staticmethod
    def get_username() -> str:
        return "system"


SYSTEM = _System()


@dataclass(frozen=True)
class Pin:
    """One chain's head as a checkpoint pinned it."""

    seq: int
    hash: str
    keyed_from: int | None
    time: str


@dataclass(frozen=True)
class Checkpoint:
    """A verified line of the checkpoint file."""

    payload: str
    key_id: str
    signature: str
    body: dict = field(compare=False)

    @property
    def time(self) -> str:
        return self.body["time"]

    def pin(self, chain: Chain) -> Pin | None:
        head = self.body["chains"].get(chain.name)
        if head is None:
            return None
        return Pin(int(head["seq"]), str(head["hash"]), head.get("keyed_from"), self.time)

    def line(self) -> dict:
        return {"payload": self.payload, "algorithm": ALGORITHM, "key_id": self.key_id, "signature": self.signature}


@dataclass
class Published:
    """What ``publish`` did: the checkpoint it wrote (None when it refused) and what it found wrong."""

    checkpoint: Checkpoint | None
    findings: list[Finding]

    def describe(self) -> str:
        if self.checkpoint is None:
            return "Refused to publish a checkpoint: " + " ".join(f.message for f in self.findings)
        heads = ", ".join(f"{name} seq {head['seq']}" for name, head in self.checkpoint.body["chains"].items())
        accepted = " (accepted despite: " + " ".join(f.message for f in self.findings) + ")" if self.findings else ""
        return f"Published the checkpoint of {self.checkpoint.time}: {heads}{accepted}."

    def as_dict(self) -> dict:
        return {
            "published": self.checkpoint is not None,
            "checkpoint": self.checkpoint.line() if self.checkpoint is not None else None,
            "findings": [f.message for f in self.findings],
            "message": self.describe(),
        }


# --- Keys --------------------------------------------------------------------


def signing_keys() -> list[Ed25519PrivateKey]:
    """The checkpoint keys, newest first: checkpoints are signed with the first, older ones verify with any."""
    return [Ed25519PrivateKey.from_private_bytes(seed) for seed in settings.GATEWAY_AUDIT_CHECKPOINT_KEYS]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_id(public: Ed25519PublicKey) -> str:
    """The public name of a checkpoint key: the start of its public key's SHA-256."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def public_keys() -> dict[str, Ed25519PublicKey]:
    """Key id to public key, newest first."""
    return {public_key_id(key.public_key()): key.public_key() for key in signing_keys()}


def describe_public_key(public: Ed25519PublicKey) -> dict:
    """A public key as a monitor takes it: raw in base64, and PEM for openssl."""
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "key_id": public_key_id(public),
        "algorithm": ALGORITHM,
        "public_key": base64.b64encode(_raw(public)).decode(),
        "pem": pem.decode(),
    }


# --- The file ----------------------------------------------------------------


def checkpoint_path() -> Path:
    return Path(settings.GATEWAY_EXPORT_DIR) / FILE_NAME


def read(line: str) -> Checkpoint:
    """A line of the checkpoint file, its signature verified; CheckpointError saying why not."""
    try:
        outer = json.loads(line)
        payload, kid, algorithm = outer["payload"], outer["key_id"], outer["algorithm"]
        signature = base64.b64decode(outer["signature"], validate=True)
        body = json.loads(payload)
        heads = body["chains"]
        for head in heads.values():
            int(head["seq"]), str(head["hash"])
        body["time"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError("it is not a checkpoint") from None
    if algorithm != ALGORITHM:
        raise CheckpointError(f"it is signed with {algorithm!r}, not {ALGORITHM}")
    public = public_keys().get(kid)
    if public is None:
        raise CheckpointError(f"it is signed with key {kid}, which GATEWAY_AUDIT_CHECKPOINT_KEY does not hold")
    try:
        public.verify(signature, payload.encode())
    except InvalidSignature:
        raise CheckpointError("its signature does not verify: the file was altered") from None
    return Checkpoint(payload, kid, outer["signature"], body)


def latest() -> Checkpoint | None:
    """The last checkpoint published, verified; None before the first; CheckpointError if it does not verify."""
    try:
        line = _last_line(checkpoint_path())
    except FileNotFoundError:
        return None
    return read(line) if line else None


def latest_line() -> dict | None:
    """The last line of the file as it stands, unverified (what the API serves: a monitor verifies it)."""
    with contextlib.suppress(FileNotFoundError):
        line = _last_line(checkpoint_path())
        if line:
            return json.loads(line)
    return None


def _last_line(path: Path) -> str:
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        tail, start = b"", end
        while start > 0:
            start = max(0, start - READ_BACK)
            handle.seek(start)
            tail = handle.read(end - start)
            lines = tail.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or start == 0:
                return lines[-1].decode("utf-8", errors="replace").strip()
        return ""


@contextlib.contextmanager
def _appending() -> Iterator:
    """The checkpoint file open for appending (0640), held exclusively: publishes never interleave."""
    path = checkpoint_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    with os.fdopen(fd, "ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- Checking a head against a pin ---------------------------------------------


def last_pin(chain: Chain) -> tuple[Pin | None, Finding | None]:
    """The chain's head as the last checkpoint pinned it (None: no checkpoint yet), or the finding that it is bad."""
    try:
        checkpoint = latest()
    except CheckpointError as error:
        message = f"The last checkpoint in {checkpoint_path()} does not verify: {error}."
        return None, Finding("checkpoint", None, "", message)
    return (checkpoint.pin(chain) if checkpoint is not None else None), None


def check_head(chain: Chain, pin: Pin | None, keys: KeyRing, crossed: Crossed) -> Finding | None:
    """Whether the chain still holds what ``pin`` pinned: its head is not behind, the pinned record is unchanged."""
    if pin is None:
        return None
    head, _ = chain.head()
    if head < pin.seq:
        return Finding(
            "removed", head or None, "",
            f"The {chain.spec.name}'s head seq {head} is behind checkpoint seq {pin.seq} of {pin.time}: the records "
            f"after seq {head} were removed.",
        )  # fmt: skip
    return _pinned_record(chain, pin.seq, pin.hash, pin.keyed_from, keys, crossed, f"checkpoint of {pin.time}")


def _pinned_record(
    chain: Chain, seq: int, hash_: str, keyed_from: int | None, keys: KeyRing, crossed: Crossed, by: str
) -> Finding | None:
    """Whether record ``seq`` (in the database or an archive) still has ``hash_`` as its hash, and that hash holds."""
    if seq == 0:
        return None if hash_ == GENESIS else Finding("checkpoint", None, "", f"The {by} pins seq 0 to a hash.")
    row = chain.model.objects.filter(seq=seq).values(*chain.spec.fields, *CHAIN_FIELDS[1:], KEY_FIELD).first()
    if row is not None:
        ident = str(row.get(chain.spec.ident, "")) if chain.spec.ident else ""
        name = chain.spec.label(row, seq)
        if not row[KEY_FIELD] and keyed_from is not None and seq >= keyed_from:
            return Finding(
                "altered", seq, ident,
                f"Record {name}, pinned by the {by}, was altered: its hash is unkeyed, but the chain is keyed from "
                f"seq {keyed_from}.",
            )  # fmt: skip
        try:
            computed = chain.spec.record_hash(row["prev_hash"], row, keys)
        except UnknownKey:
            return Finding("key", seq, ident, f"Record {name} is hashed with chain key {row[KEY_FIELD]}, not given.")
        if computed != row["record_hash"]:
            return Finding("altered", seq, ident, f"Record {name} was altered: its content no longer matches its hash.")
        if row["record_hash"] != hash_:
            return Finding(
                "checkpoint", seq, ident,
                f"Record {name} no longer has the hash the {by} pinned ({hash_[:16]}…): it was replaced, or the "
                f"records up to it were removed and written again.",
            )  # fmt: skip
        return None
    return _archived_record(chain, seq, hash_, crossed, by)


def _archived_record(chain: Chain, seq: int, hash_: str, crossed: Crossed, by: str) -> Finding | None:
    run = None
    if chain.runs is not None:
        run = (
            chain.runs.objects.filter(first_seq__lte=seq, last_seq__gte=seq)
            .values("archive_id", "first_seq", "last_seq", "last_hash")
            .first()
        )
    if run is None:
        return Finding(
            "removed", seq, "", f"Record seq {seq}, pinned by the {by}, was removed, and no archive accounts for it."
        )
    crossed.add(run["archive_id"], run["first_seq"], run["last_seq"])  # its file is checked with the others
    archived = run["last_hash"] if run["last_seq"] == seq else record_at(run["archive_id"], seq)
    if archived != hash_:
        return Finding(
            "checkpoint", seq, "", f"Archived record seq {seq} does not have the hash the {by} pinned ({hash_[:16]}…)."
        )
    return None


def describe_pin(chain: Chain, pin: Pin | None) -> str:
    if pin is None:
        if latest_line() is None:
            return "No checkpoint has been published yet: the newest records are not pinned."
        return f"The last checkpoint does not cover the {chain.spec.name}."
    return f"Its head is at or past the last checkpoint (seq {pin.seq}, {pin.time}), whose record is unchanged."


# --- Publishing ----------------------------------------------------------------


def publish(now: datetime | None = None, accept: str | None = None) -> Published:
    """Append a signed checkpoint of every chain's head to the file, and record it in the trail.

    Refuses (and records the refusal) when a head has gone back behind the last
    checkpoint, a pinned record changed, or the head record itself does not hold,
    unless ``accept`` gives the operator's reason to publish it anyway.
    """
    now = now or timezone.now()
    keys = key_ring()
    with _appending() as handle:
        findings: list[Finding] = []
        try:
            previous = latest()
        except CheckpointError as error:
            previous = None
            findings.append(Finding("checkpoint", None, "", f"The last checkpoint does not verify: {error}."))
        heads = {}
        for chain in CHAINS.values():
            pin = previous.pin(chain) if previous is not None else None
            seq, hash_ = chain.head()
            keyed_from = pin.keyed_from if pin is not None and pin.keyed_from is not None else None
            if keyed_from is None:
                keyed_from = _first_keyed(chain, after=pin.seq if pin is not None else 0)
            found = check_head(chain, pin, keys, Crossed()) or _pinned_record(
                chain, seq, hash_, keyed_from, keys, Crossed(), "new checkpoint"
            )
            if found is not None:
                findings.append(found)
            heads[chain.name] = {"seq": seq, "hash": hash_, "keyed_from": keyed_from}
        if findings and accept is None:
            result = Published(None, findings)
            log.error("%s", result.describe())
            record_event(SYSTEM, "system", "refuse", OBJECT_TYPE, object_repr="checkpoint refused",
                         changes={"findings": [None, [f.message for f in findings]]})  # fmt: skip
            return result
        body: dict = {"version": VERSION, "time": now.astimezone(UTC).isoformat(), "chains": heads}
        if accept is not None:
            body["accepted"] = {
                "reason": accept,
                "findings": [f.message for f in findings],
                "previous": previous.body if previous is not None else None,
            }
        checkpoint = _sign(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False), body)
        handle.write(json.dumps(checkpoint.line(), separators=(",", ":")).encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    summary = "checkpoint: " + ", ".join(f"{name} seq {head['seq']}" for name, head in heads.items())
    action = "accept" if accept is not None else "checkpoint"
    record_event(
        SYSTEM, "system", action, OBJECT_TYPE, object_repr=summary, changes={"checkpoint": [None, checkpoint.line()]}
    )
    return Published(checkpoint, findings)


def _sign(payload: str, body: dict) -> Checkpoint:
    key = signing_keys()[0]
    signature = base64.b64encode(key.sign(payload.encode())).decode()
    return Checkpoint(payload, public_key_id(key.public_key()), signature, body)


def _first_keyed(chain: Chain, after: int) -> int | None:
    """The first keyed record's seq after ``after`` (None: none yet); the boundary checkpoints carry on."""
    keyed = chain.model.objects.filter(seq__gt=after).exclude(**{KEY_FIELD: ""}).order_by("seq")
    return keyed.values_list("seq", flat=True).first()
