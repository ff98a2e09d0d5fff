"""Compare two sets of py-spy worker profiles as microseconds of CPU per request: where did the difference go?

    .venv/bin/python bench/profile_diff.py BEFORE_DIR 718 AFTER_DIR 862

Each directory holds one run's ``profile-worker*.speedscope.json`` (``bench/run.py --profile`` writes them to
``bench/results/``: copy them away between runs). Each number is that run's gateway CPU per request in µs at 32
connections, from ``bench/run.py``'s table. A function's share of its run's running samples times that number is
its cost per request. The two are printed side by side, largest increase first, for the function's own time
(``self``: at the top of the stack) and for everything under it (``inclusive``). File paths are cut to the package
or the repository, so two worktrees of the repository compare.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

# Leaf frames of threads that wait rather than run (as ``profile_summary.IDLE_LEAVES``).
IDLE = {"_worker", "EpollSelector.select", "Condition.wait", "Thread._wait_for_tstate_lock"}


def _where(file: str) -> str:
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1]
    stdlib = re.split(r"/lib/python3\.\d+/", file, maxsplit=1)
    if len(stdlib) == 2:
        return stdlib[1]
    parts = Path(file).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else file


def load(directory: Path, under: str | None = None) -> tuple[Counter, Counter, float]:
    """Samples by function (its own, and anywhere on the stack), and all running samples. With ``under`` (a
    function's name), only what runs under that function counts, by function called from it (``inclusive``)."""
    own, anywhere, total = Counter(), Counter(), 0.0
    for path in sorted(directory.glob("*.speedscope.json")):
        doc = json.loads(path.read_text())
        frames = doc["shared"]["frames"]
        for profile in doc["profiles"]:
            for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
                names = [(frames[i]["name"], _where(frames[i].get("file") or "")) for i in stack]
                if not names or names[-1][0] in IDLE:
                    continue
                total += weight
                if under is not None:
                    at = next((i for i, (function, _) in enumerate(names) if function == under), None)
                    if at is None:
                        continue
                    names = names[at:]
                own[names[-1]] += weight
                for name in set(names):
                    anywhere[name] += weight
    return own, anywhere, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("before_us", type=float, help="gateway CPU per request of the 'before' run, µs")
    parser.add_argument("after", type=Path)
    parser.add_argument("after_us", type=float)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--under", help="only what runs under this function (its name, e.g. BufferedWriter._write)")
    args = parser.parse_args()
    before, after = load(args.before, args.under), load(args.after, args.under)
    if not before[2] or not after[2]:
        raise SystemExit("no running samples in one of the directories")
    for label, index in (("self", 0), ("inclusive", 1)):
        rows = []
        for name in set(before[index]) | set(after[index]):
            was = before[index][name] / before[2] * args.before_us
            now = after[index][name] / after[2] * args.after_us
            rows.append((now - was, was, now, name))
        rows.sort(reverse=True)
        print(f"{label}: µs per request, before -> after (largest increases, then largest decreases)")
        for part in (rows[: args.top], rows[-10:]):
            for change, was, now, (function, file) in part:
                print(f"  {change:+8.1f}  {was:7.1f} -> {now:7.1f}  {function}  ({file})")
            print("  ...")
        print()


if __name__ == "__main__":
    main()
