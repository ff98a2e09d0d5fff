"""A stopping Daphne worker takes no new request and waits for every application still running.

Both failed on the worker before the fix: a request that came in on a keep-alive connection while the
stop waited for the others was run, answered and cut off when the reactor stopped, its audit record
never queued (tests/audit/test_spool.py saw about one such loss in two stops on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import time

from daphne.http_protocol import WebRequest

from gateway_project import daphne_worker  # noqa: F401 - patches Daphne's server, as the worker runs it
from gateway_project.daphne_worker import server


class ArrivingRequest(WebRequest):
    """An HTTP request as Daphne's protocol hands it to the server; only its error answer is watched."""

    def __init__(self):
        self.refused_with = None

    def basic_error(self, status, status_text, body):
        self.refused_with = status


class ArrivingSession:
    """A WebSocket handshake, which Daphne still hands over while it stops."""


async def settling(gate: asyncio.Event, ended: list, name: str):
    """An application that, once cancelled, still has work to finish (as a request settling its spend does)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await gate.wait()
        ended.append(name)
        raise


def daphne(ended: list, gate: asyncio.Event) -> server.Server:
    async def application(scope, receive, send):
        await settling(gate, ended, scope["type"])

    worker = server.Server(application=application, endpoints=["tcp:port=0:interface=127.0.0.1"])  # never run
    worker.connections = {}
    return worker


def arrive(worker: server.Server, protocol, kind: str):
    worker.connections[protocol] = {"connected": time.time()}
    return worker.create_application(protocol, {"type": kind})


async def until(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.001)


def test_a_request_that_arrives_while_the_worker_stops_is_refused_and_never_run():
    async def scenario():
        ended, gate = [], asyncio.Event()
        worker = daphne(ended, gate)
        assert arrive(worker, object(), "http") is not None  # in flight when the stop begins
        await asyncio.sleep(0)
        stopped = worker.kill_all_applications()
        await asyncio.sleep(0)  # the stop is waiting for the first
        late = ArrivingRequest()
        queue = arrive(worker, late, "late")
        gate.set()
        await until(lambda: stopped.called)
        return queue, late.refused_with, list(ended)

    queue, refused_with, ended = asyncio.run(scenario())
    assert queue is None and refused_with == 503
    assert ended == ["http"]  # the late request never ran


def test_the_stop_waits_for_every_application_even_one_that_started_during_it():
    async def scenario():
        ended, gate = [], asyncio.Event()
        worker = daphne(ended, gate)
        arrive(worker, object(), "http")
        await asyncio.sleep(0)
        stopped = worker.kill_all_applications()
        await asyncio.sleep(0)  # the stop is waiting for the first
        arrive(worker, ArrivingSession(), "websocket")  # a handshake Daphne still hands over meanwhile
        await asyncio.sleep(0)
        gate.set()
        await until(lambda: stopped.called)
        return list(ended)  # as they were when the reactor was let go

    assert sorted(asyncio.run(scenario())) == ["http", "websocket"]
