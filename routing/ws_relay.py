"""Relay a WebSocket session's frames between the client (ASGI) and the agent (``websockets``), and count them; text
frames pass the session's guardrails (``routing.ws_guard``) when any apply."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import EXTERNAL_CLOSE_CODES

from routing.ws_guard import GUARDRAIL_BLOCKED, FrameBlocked, FrameGuard

PREVIEW_SOURCE_CHARS = 1000  # the audit preview keeps far fewer; the redaction rules see this much
POLICY_VIOLATION = 1008  # the close code of a session its key no longer lets in, that lasted too long, or blocked
SESSION_DEADLINE = "session_deadline"  # the reason a session that lasted the longest a session may is closed with


@dataclass(slots=True)
class Traffic:
    """What went through a session each way, and how it ended (the first ending reported wins)."""

    frames_in: int = 0  # client to agent
    frames_out: int = 0  # agent to client
    bytes_in: int = 0
    bytes_out: int = 0
    first_in: str = ""  # the first text frame each way, for the audit previews
    first_out: str = ""
    closed_by: str = ""  # client, upstream or gateway
    close_code: int | None = None  # as the side that closed sent it (None: refused with an HTTP answer)
    error: str = ""
    handshake_ms: float | None = None
    notice: str = ""  # a text frame the client is sent before the gateway closes the session (a guardrail's error)

    def count_in(self, frame: str | bytes, size: int) -> None:
        self.frames_in += 1
        self.bytes_in += size
        if not self.first_in and isinstance(frame, str):
            self.first_in = frame[:PREVIEW_SOURCE_CHARS]

    def count_out(self, frame: str | bytes, size: int) -> None:
        self.frames_out += 1
        self.bytes_out += size
        if not self.first_out and isinstance(frame, str):
            self.first_out = frame[:PREVIEW_SOURCE_CHARS]

    def end(self, closed_by: str, code: int | None, error: str = "") -> None:
        if not self.closed_by:
            self.closed_by, self.close_code, self.error = closed_by, code, error

    def blocked(self, refused: FrameBlocked) -> None:
        """A guardrail ends the session; its error goes to the client first, unless the session had already ended."""
        if not self.closed_by:
            self.notice = refused.notice
        self.end("gateway", POLICY_VIOLATION, GUARDRAIL_BLOCKED)

    def details(self) -> dict:
        """The session's audit facts beyond the record's columns."""
        return {
            "protocol": "websocket",
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "close_code": self.close_code,
            "closed_by": self.closed_by,
            "handshake_ms": None if self.handshake_ms is None else round(self.handshake_ms, 2),
        }


async def relay(
    receive,
    send,
    agent: ClientConnection,
    traffic: Traffic,
    max_frame_bytes: int,
    withdrawn: asyncio.Future,
    seconds_left: float,
    guard: FrameGuard | None = None,
) -> None:
    """Relay frames both ways until one side closes, ``withdrawn`` gives the error code that ends the session (its
    key may no longer be used), ``seconds_left`` have passed (``session_deadline``) or ``guard`` blocks a frame
    (``guardrail_blocked``, after an error frame), all three with close code 1008; then close the client if it was
    not the one."""
    inbound = asyncio.ensure_future(_client_to_agent(receive, agent, traffic, max_frame_bytes, guard))
    outbound = asyncio.ensure_future(_agent_to_client(agent, send, traffic, guard))
    try:
        done, _ = await asyncio.wait(
            (inbound, outbound, withdrawn), timeout=max(0.0, seconds_left), return_when=asyncio.FIRST_COMPLETED
        )
        if withdrawn.done():
            traffic.end("gateway", POLICY_VIOLATION, withdrawn.result())
        elif not done:
            traffic.end("gateway", POLICY_VIOLATION, SESSION_DEADLINE)
    finally:
        inbound.cancel()
        outbound.cancel()
        for result in await asyncio.gather(inbound, outbound, return_exceptions=True):
            if isinstance(result, Exception):
                raise result
    if traffic.closed_by == "upstream":
        await close_client(send, client_close_code(traffic.close_code))
    elif traffic.closed_by == "gateway":
        if traffic.notice and not await _sent(send, {"type": "websocket.send", "text": traffic.notice}):
            return
        await close_client(send, traffic.close_code, traffic.error)


async def _client_to_agent(
    receive, agent: ClientConnection, traffic: Traffic, max_frame_bytes: int, guard: FrameGuard | None
) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            traffic.end("client", message.get("code") or 1005)
            return
        frame = message.get("bytes")
        if frame is not None:
            size = len(frame)
        else:
            frame = message.get("text")
            if frame is None:
                continue
            size = len(frame.encode())
        if size > max_frame_bytes:
            traffic.end("gateway", 1009, "frame_too_large")
            return
        if guard is not None and isinstance(frame, str):
            try:
                checked = await guard.inbound(frame)
            except FrameBlocked as refused:  # never sent: the agent does not see it
                traffic.blocked(refused)
                return
            if checked is not frame:  # redacted: counted as the agent gets it
                frame, size = checked, len(checked.encode())
        traffic.count_in(frame, size)
        try:
            await agent.send(frame)
        except ConnectionClosed as closed:
            _agent_closed(traffic, closed)
            return


async def _agent_to_client(agent: ClientConnection, send, traffic: Traffic, guard: FrameGuard | None) -> None:
    while True:
        try:
            frame = await agent.recv()
        except ConnectionClosed as closed:
            _agent_closed(traffic, closed)
            return
        if guard is not None and isinstance(frame, str):
            try:
                frame = await guard.outbound(frame)
            except FrameBlocked as refused:
                traffic.blocked(refused)
                return
        if isinstance(frame, str):
            traffic.count_out(frame, len(frame.encode()))
            message = {"type": "websocket.send", "text": frame}
        else:
            traffic.count_out(frame, len(frame))
            message = {"type": "websocket.send", "bytes": frame}
        try:
            await send(message)
        except OSError:  # uvicorn: the client's connection is already gone
            traffic.end("client", 1006)
            return


async def _sent(send, message: dict) -> bool:
    """Whether ``message`` went to the client (under uvicorn, a client that is gone raises OSError)."""
    try:
        await send(message)
    except OSError:
        return False
    return True


def _agent_closed(traffic: Traffic, closed: ConnectionClosed) -> None:
    if closed.rcvd is None:  # the connection broke without a close frame
        traffic.end("upstream", 1006, "upstream_disconnected")
    else:
        traffic.end("upstream", closed.rcvd.code)


def client_close_code(code: int | None) -> int:
    """The agent's close code as the client may be sent it: "no code" as 1000, a broken connection as 1014."""
    if code in (None, 1005):
        return 1000
    if code == 1006:
        return 1014  # bad gateway
    return code


def upstream_close_code(code: int | None) -> int:
    """The client's close code as the agent may be sent it: "no code" as 1000, a dropped connection as 1001."""
    if code in (None, 1005):
        return 1000
    if code == 1006:
        return 1001  # going away
    if code in EXTERNAL_CLOSE_CODES or 3000 <= code < 5000:
        return code
    return 1000


async def close_client(send, code: int, reason: str = "") -> None:
    """Close the client's connection with ``code``; where the server cannot send that code, with 4000 + code - 1000.

    Daphne (Autobahn) lets an application send only 1000 and 3000-4999, so a
    standard code such as 1001, 1009 or 1014 reaches its clients as 4001, 4009, 4014.
    """
    message = {"type": "websocket.close", "code": code, "reason": reason}
    try:
        await send(message)
    except OSError:  # uvicorn: the client's connection is already gone
        return
    except Exception:
        if not 1000 < code < 2000:
            raise
        await send({**message, "code": 4000 + code - 1000})
