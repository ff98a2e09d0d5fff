"""Summarise py-spy speedscope profiles of gateway workers: where does the CPU go?

    .venv/bin/python bench/profile_summary.py bench/results/profile-*.speedscope.json

py-spy (without --idle) keeps only samples of threads that are running, so
every share below is a share of the worker's CPU samples, all threads and all
given files together. For each function of the gateway's own code (files under
routing/, keys/, billing/, audit/, gateway_project/) it prints:

  total  samples with the function anywhere on the stack (inclusive)
  own    samples whose deepest gateway frame is this function: its own lines
         plus the library code it calls directly (not through another gateway
         function) - the figure to rank "hot spots in our code" by
  self   samples with the function itself at the top of the stack
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT_DIRS = ("routing", "keys", "billing", "audit", "gateway_project")
# Leaf frames of threads that are waiting, not running, which py-spy's idle
# detection misses: the thread-pool workers blocked on their queue (the wait is
# in C, below this frame) and an event loop inside epoll_wait.
IDLE_LEAVES = {
    ("_worker", "concurrent/futures/thread.py"),
    ("EpollSelector.select", "selectors.py"),
    ("Condition.wait", "threading.py"),
    ("Thread._wait_for_tstate_lock", "threading.py"),
}


def _idle(frame: dict) -> bool:
    file = frame.get("file") or ""
    return any(frame.get("name") == name and file.endswith(suffix) for name, suffix in IDLE_LEAVES)


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def _is_project(path: str) -> bool:
    try:
        rel = Path(path).resolve().relative_to(ROOT)
    except ValueError:
        return False
    return rel.parts[:1] != (".venv",) and bool(rel.parts) and rel.parts[0] in PROJECT_DIRS


def summarise(paths: list[str], top: int = 20) -> dict:
    total = 0
    idle = 0
    seconds = 0.0
    inclusive: Counter = Counter()
    own: Counter = Counter()
    self_: Counter = Counter()
    lib_self: Counter = Counter()
    with_project = 0
    for path in paths:
        data = json.loads(Path(path).read_text())
        frames = data["shared"]["frames"]
        keys = []
        project = []
        idle_frame = [_idle(frame) for frame in frames]
        for frame in frames:
            file = frame.get("file") or ""
            keys.append(f"{frame.get('name', '?')} ({_short(file)})")
            project.append(_is_project(file))
        for profile in data["profiles"]:
            weights = profile.get("weights") or [0.0] * len(profile["samples"])
            for stack, seconds_of_sample in zip(profile["samples"], weights, strict=False):
                if not stack:
                    continue
                leaf = stack[-1]  # speedscope stacks run from the root to the leaf
                if idle_frame[leaf]:
                    idle += 1
                    continue
                weight = 1
                total += weight
                seconds += seconds_of_sample
                if project[leaf]:
                    self_[keys[leaf]] += weight
                else:
                    lib_self[keys[leaf]] += weight
                seen = set()
                deepest = None
                for index in stack:
                    if project[index]:
                        deepest = index
                        if keys[index] not in seen:
                            seen.add(keys[index])
                            inclusive[keys[index]] += weight
                if deepest is not None:
                    with_project += weight
                    own[keys[deepest]] += weight

    def share(counter):
        return [
            {"function": name, "samples": n, "share": round(n / total, 4) if total else 0.0}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "seconds": round(seconds, 3),
        "idle_samples_dropped": idle,
        "with_gateway_code_on_stack": round(with_project / total, 4) if total else 0.0,
        "gateway_own": share(own),
        "gateway_inclusive": share(inclusive),
        "gateway_self": share(self_),
        "library_self": share(lib_self),
    }


def render(summary: dict, top: int = 15) -> str:
    lines = [
        f"{summary['samples']} CPU samples ({summary['seconds']:.1f} s; "
        f"{summary['idle_samples_dropped']} samples of waiting threads left out); "
        f"{summary['with_gateway_code_on_stack']:.1%} have gateway code (routing/ keys/ billing/ audit/ "
        "gateway_project/) on the stack; the rest is Daphne/Twisted/asyncio/Channels/Django plumbing.",
        "",
        "Gateway functions by 'own' share (own lines + library calls made directly from them):",
    ]
    incl = {row["function"]: row["share"] for row in summary["gateway_inclusive"]}
    for row in summary["gateway_own"][:top]:
        total = incl.get(row["function"])
        total_txt = f"{total:6.1%}" if total is not None else "     ?"
        lines.append(f"  own {row['share']:6.1%}  total {total_txt}  {row['function']}")
    lines += ["", "Gateway functions by inclusive share (anywhere on the stack):"]
    for row in summary["gateway_inclusive"][:top]:
        lines.append(f"  {row['share']:6.1%}  {row['function']}")
    lines += ["", "Hottest leaf functions overall (library code, self time):"]
    for row in summary["library_self"][:top]:
        lines.append(f"  {row['share']:6.1%}  {row['function']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="speedscope JSON files written by py-spy record")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    files = [f for f in args.files if os.path.exists(f)]
    if not files:
        parser.error("no such files")
    summary = summarise(files, top=max(args.top, 40))
    print(json.dumps(summary, indent=2) if args.json else render(summary, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
