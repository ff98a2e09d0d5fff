"""GC pause logger for the gateway's Daphne workers (bench/run.py --gc-stats only).

bench/run.py puts this directory on PYTHONPATH of the gateway it starts, with
BENCH_GC_LOG_DIR set; Python imports ``sitecustomize`` at start-up, so every
Daphne worker appends to ``<dir>/gc-<pid>.log``: one line per full (gen 2)
collection and a running total of every collection's time at most 4 times a
second. It changes nothing in the gateway; any other process ignores it.
"""

import os

_DIR = os.environ.get("BENCH_GC_LOG_DIR")


def _install(directory: str) -> None:
    import gc
    import time

    log = open(os.path.join(directory, f"gc-{os.getpid()}.log"), "a", buffering=1)
    state = {"start": 0.0, "ms": [0.0, 0.0, 0.0], "n": [0, 0, 0], "last": 0.0}

    def callback(phase, info):
        now = time.perf_counter()
        if phase == "start":
            state["start"] = now
            return
        gen = info["generation"]
        ms = (now - state["start"]) * 1000
        state["ms"][gen] += ms
        state["n"][gen] += 1
        wall = time.time()
        if gen == 2:
            log.write(f"gen2 {wall:.3f} {ms:.2f}\n")
        if gen == 2 or wall - state["last"] > 0.25:
            state["last"] = wall
            totals = " ".join(f"{x:.2f}" for x in state["ms"]) + " " + " ".join(map(str, state["n"]))
            log.write(f"total {wall:.3f} {totals}\n")

    gc.callbacks.append(callback)


try:
    if _DIR:
        with open("/proc/self/cmdline", "rb") as _fh:
            if b"daphne" in _fh.read():
                _install(_DIR)
except Exception:  # never break start-up of the process being measured
    pass
