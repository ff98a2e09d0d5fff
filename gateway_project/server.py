"""Run N Daphne worker processes on one listening socket.

Daphne serves one process per event loop; to use every core, this supervisor
binds one ``SO_REUSEPORT`` socket per worker on the same port and hands each
to its worker the way systemd socket activation does (fd 3, ``LISTEN_FDS``/
``LISTEN_PID``). The kernel then spreads new connections evenly across the
workers; with one shared socket, whichever worker woke first took a whole
burst of connections and left the other idle. The supervisor keeps every
socket open, so a worker that dies is restarted on the same socket without
dropping queued connections. SIGTERM or SIGINT stops them all, each flushing
its audit buffer on the way out.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from gateway_project.metrics_archive import archive_dead_worker, directory_lock
from gateway_project.spool import process_alive

log = logging.getLogger("gateway.server")  # in the format of every other line (``gateway_project.logs``)

# The shell sets LISTEN_PID to its own pid and then execs Daphne in place, so
# the pid Twisted sees is the one systemd's protocol expects. The socket is put
# on fd 3 before the shell runs (``_on_fd_3``): a POSIX shell's redirections
# name single-digit descriptors only, and the supervisor may hold more.
_EXEC = 'export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=gateway; exec "$0" "$@"'
SYSTEMD_FD = 3


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted connections inherit this on Linux: a response's headers and body,
    # written separately, must not wait out the client's delayed ACK (40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def worker_command(sock: socket.socket, application: str, server: str, extra_args: list[str]) -> list[str]:
    """The command that runs one worker process on ``sock``."""
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", "--fd", str(sock.fileno()), "--loop", "uvloop",
            # httptools, with the request head bounded in size and time (gateway_project/uvicorn_protocol.py).
            "--http", "gateway_project.uvicorn_protocol:BoundedHttpToolsProtocol",
            "--lifespan", "on", "--no-server-header",
            # The gateway reads X-Forwarded-For itself (GATEWAY_TRUSTED_PROXIES): uvicorn believes it from loopback.
            "--no-proxy-headers", *extra_args, application,
        ]  # fmt: skip
    family = "INET6" if sock.family == socket.AF_INET6 else "INET"
    return [
        "sh",
        "-c",
        _EXEC,
        sys.executable,
        "-m",
        "gateway_project.daphne_worker",  # Daphne, with its shutdown waiting for requests in flight
        "-e",
        f"systemd:domain={family}:index=0",
        *extra_args,
        application,
    ]


def metrics_directory(port: int) -> Path:
    """Where the workers write their metric values (prometheus-client's multiprocess mode), emptied of what
    processes no longer running left there and of the archive of dead workers' counts (a new supervisor's start
    from zero, a reset Prometheus expects): ``GATEWAY_METRICS_DIR`` (shared with a Celery worker on this host),
    or one directory per port under ``GATEWAY_VAR_DIR``."""
    from django.conf import settings

    directory = Path(os.environ.get("GATEWAY_METRICS_DIR") or settings.VAR_DIR / "metrics" / str(port))
    directory.mkdir(parents=True, exist_ok=True)
    with directory_lock(directory, exclusive=True):
        for path in directory.glob("*.db"):
            pid = path.stem.rpartition("_")[2]
            if not (pid.isdigit() and process_alive(int(pid))):
                path.unlink(missing_ok=True)
    return directory


def serve(host: str, port: int, workers: int, application: str, server: str, extra_args: list[str]) -> int:
    sockets = [bind(host, port)]
    port = sockets[0].getsockname()[1]  # a port of 0 asks the kernel for a free one
    sockets += [bind(host, port) for _ in range(workers - 1)]
    procs: dict[int, subprocess.Popen] = {}
    stopping = False
    metrics = metrics_directory(port)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}

    def start(slot: int) -> None:
        sock = sockets[slot]
        command = worker_command(sock, application, server, extra_args)
        if server == "uvicorn":  # told its descriptor by number
            procs[slot] = subprocess.Popen(command, pass_fds=(sock.fileno(),), env=env)
        else:  # the supervisor runs no threads: a pre-exec step is safe here
            on_fd_3 = partial(os.dup2, sock.fileno(), SYSTEMD_FD)
            procs[slot] = subprocess.Popen(command, pass_fds=(SYSTEMD_FD,), preexec_fn=on_fd_3, env=env)

    def stop(signum, frame):
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(workers):
        start(slot)
    log.info("gateway: %d %s worker(s) on http://%s:%d/", workers, server, host, port)
    restarts: list[float] = []
    while True:
        time.sleep(0.2)
        if stopping:
            deadline = time.monotonic() + 30
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
            return 0
        for slot, proc in list(procs.items()):
            if proc.poll() is not None:
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > 5 * workers:
                    log.error("gateway: workers keep dying; giving up")
                    stop(None, None)
                    break
                log.warning("gateway: worker %d exited with %s; restarting", slot, proc.returncode)
                archive_dead_worker(metrics, proc.pid)  # its gauges go; its counts stay, in the archive
                start(slot)
