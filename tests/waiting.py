"""Waiting on another thread or process without racing a clock: poll for a state until a deadline.

A test that sleeps "long enough" for something else to happen fails on a loaded machine and
wastes time on an idle one. These helpers return as soon as the state is reached; the deadline
only bounds how long a broken build takes to fail, so it is generous.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")

# Long enough for any state a test waits on to be reached on a loaded machine; a test only waits
# this long when it is about to fail.
DEADLINE_SECONDS = 30.0


def wait_for(predicate: Callable[[], T], seconds: float = 10.0, interval: float = 0.05) -> T:
    """Poll until ``predicate()`` is truthy and return it; its last (falsy) value once ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def until(predicate: Callable[[], T], what: str, seconds: float = DEADLINE_SECONDS, interval: float = 0.02) -> T:
    """Poll until ``predicate()`` is truthy and return it; fail the test saying ``what`` never happened."""
    value = wait_for(predicate, seconds, interval)
    assert value, f"{what}: not within {seconds:g} s"
    return value


def in_thread(call: Callable[[], T]) -> Future[T]:
    """Run ``call`` on a daemon thread; its result (or exception) comes back through the future."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as error:  # handed to whoever reads the future
            future.set_exception(error)

    threading.Thread(target=run, daemon=True).start()
    return future
