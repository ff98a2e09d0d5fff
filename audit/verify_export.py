"""Check the hash chain of an exported audit log, offline, with nothing but Python.

    python audit/verify_export.py audit-export.jsonl        # or .csv, or either gzipped (.gz)

Works for exports of the request log and of the admin-action trail (told apart
by their columns), and for the retention job's archives (gzipped JSON Lines).

The export must hold the chain fields (seq, prev_hash, record_hash) and every
chained field, as the console's and the API's exports do. Records are checked in
seq order; the first record's prev_hash is taken on trust unless you give
``--anchor HASH`` (the record_hash of the record before it, from an earlier export).
An export filtered by client, agent, status or text has gaps by design: check it
with ``--records-only``, which proves each record's content against its own hash.
A retention archive holds one or more runs of consecutive records: check one run
with ``--seq FIRST-LAST --anchor PREV_HASH`` (the run's numbers and hashes, listed
with the archive); it also prints the run's last record_hash, the run's last_hash.
Records written since the chains were keyed (issue 13) carry a ``chain_key_id`` and
are checked with the chain keys: give them with ``--key-file FILE`` (the keys,
newest first, one a line or separated by commas, as ``GATEWAY_AUDIT_CHAIN_KEY_FILE``
holds them), or set ``GATEWAY_AUDIT_CHAIN_KEY`` / ``GATEWAY_AUDIT_CHAIN_KEY_FILE``.
Without them a keyed record is reported as one that cannot be checked.
Exits 0 when the chain (or every record) holds, 1 with the first bad record.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from chain_format import (  # type: ignore[no-redef]
        CHAIN_FIELDS,
        KEY_FIELD,
        REQUESTS,
        TRAIL,
        ChainSpec,
        KeyRing,
        UnknownKey,
        parse_key_ring,
        verify_rows,
    )
else:
    from audit.chain_format import (
        CHAIN_FIELDS,
        KEY_FIELD,
        REQUESTS,
        TRAIL,
        ChainSpec,
        KeyRing,
        UnknownKey,
        parse_key_ring,
        verify_rows,
    )

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _open(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _uncell(value: str) -> str:
    """Undo the export's spreadsheet-formula guard (a quote before a leading =, +, -, @, tab, return or quote)."""
    return value[1:] if value.startswith("'") and value[1:].startswith((*FORMULA_PREFIXES, "'")) else value


def read_rows(path: Path) -> tuple[ChainSpec, list[dict]]:
    """The file's records in seq order, and which chain they belong to (the trail's have an actor)."""
    name = path.name.removesuffix(".gz")
    with _open(path) as handle:
        if name.endswith(".csv"):
            rows = [{k: _uncell(v) for k, v in row.items()} for row in csv.DictReader(handle)]
        else:
            rows = [json.loads(line) for line in handle if line.strip()]
    spec = TRAIL if rows and "actor" in rows[0] else REQUESTS
    needed = [f for f in spec.fields if f not in spec.later]
    missing = [f for f in (*needed, *CHAIN_FIELDS) if rows and f not in rows[0]]
    if missing:
        raise SystemExit(f"{path}: the export lacks the chain's fields {', '.join(missing)}.")
    return spec, sorted(rows, key=lambda row: int(row["seq"]) if str(row.get("seq") or "").isdigit() else -1)


def read_keys(key_file: Path | None) -> KeyRing | None:
    """The chain keys from ``--key-file``, else from the gateway's own variables; None when none are given."""
    if key_file is not None:
        text = key_file.read_text(encoding="utf-8")
    elif os.environ.get("GATEWAY_AUDIT_CHAIN_KEY_FILE"):
        text = Path(os.environ["GATEWAY_AUDIT_CHAIN_KEY_FILE"]).read_text(encoding="utf-8")
    else:
        text = os.environ.get("GATEWAY_AUDIT_CHAIN_KEY", "")
    try:
        keys = parse_key_ring(text)
    except ValueError as error:
        raise SystemExit(f"The chain keys: {error}.") from None
    return KeyRing(keys) if keys else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="an audit export: .jsonl or .csv, optionally .gz")
    parser.add_argument("--anchor", default=None, help="record_hash of the record just before the first one")
    parser.add_argument("--records-only", action="store_true", help="check each record alone (filtered exports)")
    parser.add_argument("--seq", default=None, metavar="FIRST-LAST", help="check only these records (an archive's run)")
    parser.add_argument("--key-file", type=Path, default=None, help="the chain keys, newest first (keyed records)")
    args = parser.parse_args(argv)
    spec, rows = read_rows(args.file)
    keys = read_keys(args.key_file)
    if args.seq:
        return _check_run(args.file, spec, rows, args.seq, args.anchor, keys)
    if args.records_only:
        for row in rows:
            name = spec.label(row, row.get("seq"))
            try:
                held = spec.record_hash(str(row.get("prev_hash", "")), row, keys) == row.get("record_hash")
            except UnknownKey:
                print(f"Record {name} is hashed with chain key {row.get(KEY_FIELD)}, which was not given (--key-file).")
                return 1
            if not held:
                print(f"Record {name} was altered: its content no longer matches its hash.")
                return 1
        print(f"Every record holds: {len(rows)} checked against its own hash (links not checked).")
        return 0
    result = verify_rows(rows, anchor=args.anchor, spec=spec, keys=keys)
    print(result.describe())
    return 0 if result.ok else 1


def _check_run(
    path: Path, spec: ChainSpec, rows: list[dict], seqs: str, anchor: str | None, keys: KeyRing | None
) -> int:
    """Check the records FIRST to LAST alone: all there, linked from ``anchor``; print the last one's hash."""
    try:
        first, last = (int(part) for part in seqs.split("-"))
    except ValueError:
        raise SystemExit(f"--seq {seqs!r} is not FIRST-LAST, e.g. 101-250.") from None
    run = [row for row in rows if str(row.get("seq") or "").isdigit() and first <= int(row["seq"]) <= last]
    result = verify_rows(run, anchor=anchor, spec=spec, keys=keys)
    print(result.describe())
    if not result.ok:
        return 1
    if (result.first_seq, result.last_seq) != (first, last):
        print(f"{path} does not hold seq {first} to {last} whole.")
        return 1
    print(f"Last record_hash: {run[-1]['record_hash']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
