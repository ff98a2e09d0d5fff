"""The audit hash chain's format: what a record's hash covers, and how to check a run of records.

Standard library only, so ``python audit/verify_export.py`` can check an exported
file on any machine without the gateway. ``audit.chain`` uses the same functions
when it writes and verifies records in the database.

Each record's hash covers the previous record's hash, a newline, and the
record's chained fields as canonical JSON (fixed key order, UTC timestamps with
microseconds, money with 9 decimals, latency with 3, IP addresses as Python
writes them). Records follow each other in ``seq`` order, 1, 2, 3, ...

Two formats, told apart by the record's ``chain_key_id``:

- empty (format 1, records written before issue 13): SHA-256 of that text. Anyone
  who can write the database can recompute it, so it only shows careless edits;
- a key id (format 2): HMAC-SHA256, under the chain key of that id, of
  ``"agent-gateway audit chain v2\n" + key id + "\n" + that text``. Without the key
  (which is never in the database) no one can make a hash that verifies.

Once a chain has a keyed record, every later one must be keyed: an unkeyed hash
after it is a record someone rewrote. The first keyed record's previous hash is the
last unkeyed one's, so the keyed chain commits to everything before it. The key
ring is newest first: new records use the first key, older ones verify with
whichever key their id names.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

GENESIS = "0" * 64
CHAIN_FIELDS = ("seq", "prev_hash", "record_hash")
KEY_FIELD = "chain_key_id"  # which chain key made the record's hash; empty: unkeyed (format 1)
KEYED_PREFIX = b"agent-gateway audit chain v2\n"
MIN_KEY_LENGTH = 32


class UnknownKey(LookupError):
    """A record's hash was made with a chain key this verification was not given."""


def key_id(key: bytes) -> str:
    """The public name of a chain key: a digest of it that reveals nothing about it."""
    return hashlib.sha256(b"agent-gateway audit chain key id\n" + key).hexdigest()[:16]


def parse_key_ring(text: str) -> list[bytes]:
    """Chain keys separated by commas or white space, newest first; each at least 32 characters."""
    keys = [part.encode() for part in re.split(r"[\s,]+", text) if part]
    short = [i + 1 for i, key in enumerate(keys) if len(key) < MIN_KEY_LENGTH]
    if short:
        raise ValueError(f"chain key {short[0]} is shorter than {MIN_KEY_LENGTH} characters")
    return keys


class KeyRing:
    """The chain keys, newest first: new records are hashed with the first, older ones verify with any."""

    def __init__(self, keys: Sequence[bytes]):
        if not keys:
            raise ValueError("a chain key ring needs at least one key")
        self.keys = tuple(keys)
        self.ids = [key_id(key) for key in self.keys]
        self.current_id = self.ids[0]
        self._by_id = dict(zip(self.ids, self.keys, strict=True))

    def get(self, kid: str) -> bytes | None:
        return self._by_id.get(kid)


@dataclass(frozen=True)
class ChainSpec:
    """One chain's format: the fields its hash covers and how each is written canonically.

    ``later`` fields were added after records were first chained: they are left
    out of the hash while empty, so records chained before they existed still verify.
    """

    name: str
    fields: tuple[str, ...]
    ident: str  # the field that names a record in messages, besides its seq
    integers: frozenset[str] = frozenset()
    nullable: frozenset[str] = frozenset()
    json_fields: frozenset[str] = frozenset()
    later: frozenset[str] = frozenset()

    def canonical(self, row: Mapping) -> bytes:
        """The bytes a record's hash covers, the same whatever form the database or an export gives the values in."""
        fields = {}
        for name in self.fields:
            value = self._value(name, row.get(name))
            if name in self.later and value in (None, "", {}, []):
                continue
            fields[name] = value
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def record_hash(self, prev_hash: str, row: Mapping, keys: KeyRing | None = None) -> str:
        """The record's hash in the format its ``chain_key_id`` names; UnknownKey if ``keys`` lacks that key."""
        text = prev_hash.encode() + b"\n" + self.canonical(row)
        kid = row.get(KEY_FIELD) or ""
        if not kid:
            return hashlib.sha256(text).hexdigest()
        key = keys.get(kid) if keys is not None else None
        if key is None:
            raise UnknownKey(kid)
        return hmac.new(key, KEYED_PREFIX + kid.encode() + b"\n" + text, hashlib.sha256).hexdigest()

    def label(self, row: Mapping, seq) -> str:
        ident = row.get(self.ident) if self.ident else None
        return f"seq {seq} ({ident})" if ident not in (None, "") else f"seq {seq}"

    def _value(self, name: str, value):
        if value is None or (value == "" and name in self.nullable):
            return None
        if name in self.integers:
            return int(value)
        if name in self.json_fields:
            return json.loads(value) if isinstance(value, str) else value
        if name == "created_at":
            moment = datetime.fromisoformat(value) if isinstance(value, str) else value
            return moment.astimezone(UTC).isoformat(timespec="microseconds")
        if name == "cost_usd":
            return str(Decimal(str(value)).quantize(Decimal("0.000000001")))
        if name == "latency_ms":
            return f"{float(value):.3f}"
        if name == "client_ip":
            return str(ipaddress.ip_address(str(value)))
        return str(value)


REQUESTS = ChainSpec(
    name="request log",
    fields=(
        "seq", "request_id", "created_at", "client_id", "client_slug", "api_key_id", "key_prefix", "agent", "model",
        "method", "path", "status", "error_type", "latency_ms", "input_tokens", "output_tokens", "cost_usd",
        "client_ip", "user_agent", "input_preview", "output_preview", "target", "details",
    ),
    ident="request_id",
    integers=frozenset({"seq", "client_id", "api_key_id", "status", "input_tokens", "output_tokens"}),
    nullable=frozenset({"client_id", "api_key_id", "client_ip"}),
    json_fields=frozenset({"details"}),
    later=frozenset({"target", "details"}),
)  # fmt: skip
TRAIL = ChainSpec(
    name="admin-action trail",
    fields=(
        "seq", "created_at", "actor", "actor_id", "via", "action", "object_type", "object_id", "object_repr",
        "changes",
    ),
    ident="id",
    integers=frozenset({"seq", "actor_id"}),
    nullable=frozenset({"actor_id"}),
    json_fields=frozenset({"changes"}),
)  # fmt: skip
SPECS = {"records": REQUESTS, "trail": TRAIL}
# The request log's, kept under their first names for existing callers.
CHAINED_FIELDS = REQUESTS.fields


def canonical(row: Mapping, spec: ChainSpec = REQUESTS) -> bytes:
    return spec.canonical(row)


def record_hash(prev_hash: str, row: Mapping, spec: ChainSpec = REQUESTS, keys: KeyRing | None = None) -> str:
    return spec.record_hash(prev_hash, row, keys)


@dataclass(frozen=True, slots=True)
class Finding:
    """The first place the chain breaks."""

    # altered, inserted, removed; key (hashed with a key not given); checkpoint (the head no longer matches the
    # last signed checkpoint); archive (archived runs the chain links through that their files do not bear out)
    kind: str
    seq: int | None
    request_id: str
    message: str


@dataclass(frozen=True, slots=True)
class Verification:
    checked: int
    first_seq: int | None
    last_seq: int | None
    finding: Finding | None
    note: str = ""  # what else was checked, e.g. the head against the last checkpoint

    @property
    def ok(self) -> bool:
        return self.finding is None

    def describe(self) -> str:
        if self.finding is not None:
            return self.finding.message
        said = (
            f"The chain holds: {self.checked} records, seq {self.first_seq} to {self.last_seq}."
            if self.checked
            else "No chained records in that range."
        )
        return f"{said} {self.note}" if self.note else said


# bridge(seq, hash, next_seq) -> (seq, hash) reached across the gap, or None: see ``verify_rows``.
Bridge = Callable[[int, str, int], "tuple[int, str | None] | None"]


def verify_rows(
    rows: Iterable[Mapping],
    anchor: str | None = None,
    spec: ChainSpec = REQUESTS,
    bridge: Bridge | None = None,
    keys: KeyRing | None = None,
    keyed_from: int | None = None,
) -> Verification:
    """Check records given in ``seq`` order; ``anchor`` is the hash of the record before the first, when known.

    ``keys`` verifies keyed records (without it, the first keyed record is a finding).
    From the first keyed record on, or from ``keyed_from`` (the boundary a signed
    checkpoint recorded), an unkeyed record is one someone rewrote.

    Without an anchor the first record's ``prev_hash`` is taken on trust (a range
    starting after records were archived, or an export of a time range).

    ``bridge`` accounts for gaps the retention job left: when seq jumps from a record
    to a later one, ``bridge(seq, hash, next_seq)`` gives the seq and hash the chain
    reaches across the gap through archived records (a hash of None when only the
    archive knows it), or None when nothing accounts for the missing records.
    """
    checked, first, previous = 0, None, None
    keyed_since = keyed_from
    for row in rows:
        seq = None if row.get("seq") in (None, "") else int(row["seq"])
        request_id = str(row.get(spec.ident, "")) if spec.ident else ""
        if seq is None:
            message = f"Record {request_id or '(no seq)'} is not in the chain (no seq): it was inserted."
            return _broken(checked, first, previous, "inserted", None, request_id, message)
        if bridge is not None and previous is not None and seq > previous[0] + 1:
            previous = bridge(previous[0], previous[1], seq) or previous
        expected_prev = anchor if previous is None else previous[1]
        name = spec.label(row, seq)
        kid = str(row.get(KEY_FIELD) or "")
        if not kid and keyed_since is not None and seq >= keyed_since:
            message = (
                f"Record {name} was altered: its hash is an unkeyed SHA-256, but the chain is keyed from "
                f"seq {keyed_since}, so that hash was recomputed by someone without the chain key."
            )
            return _broken(checked, first, previous, "altered", seq, request_id, message)
        try:
            computed = spec.record_hash(str(row.get("prev_hash", "")), row, keys)
        except UnknownKey:
            message = (
                f"Record {name} is hashed with chain key {kid}, which this verification was not given "
                "(GATEWAY_AUDIT_CHAIN_KEY in the gateway, --key-file offline): add that key, or the record was altered."
            )
            return _broken(checked, first, previous, "key", seq, request_id, message)
        if computed != row.get("record_hash"):
            message = f"Record {name} was altered: its content no longer matches its hash."
            return _broken(checked, first, previous, "altered", seq, request_id, message)
        if kid and keyed_since is None:
            keyed_since = seq
        if expected_prev is not None and row.get("prev_hash") != expected_prev:
            after = previous[0] if previous is not None else seq - 1
            if previous is not None and seq > after + 1:
                missing = f"seq {after + 1}" if seq == after + 2 else f"seq {after + 1} to {seq - 1}"
                kind, message = "removed", f"Records were removed before {name}: {missing}."
            elif previous is not None and seq <= after:
                kind, message = "inserted", f"Record {name} was inserted: seq {seq} already came."
            else:
                kind, message = (
                    "inserted",
                    (f"Record {name} does not follow seq {after}: it was inserted, or the one before it was replaced."),
                )
            return _broken(checked, first, previous, kind, seq, request_id, message)
        if previous is not None and seq != previous[0] + 1:
            message = f"Records were renumbered or removed before {name}."
            return _broken(checked, first, previous, "removed", seq, request_id, message)
        checked += 1
        first = seq if first is None else first
        previous = (seq, row["record_hash"])
    return Verification(checked, first, previous[0] if previous else None, None)


def _broken(checked, first, previous, kind, seq, request_id, message) -> Verification:
    return Verification(checked, first, previous[0] if previous else None, Finding(kind, seq, request_id, message))
