#!/usr/bin/env python3
"""Set up and run the project with nothing but Python installed.

    python3 dev.py run     set up, then start the mock upstream and the gateway with demo data
    python3 dev.py test    set up, then run the whole test suite on both profiles
    python3 dev.py bench   set up, then run the benchmark (production profile)
    python3 dev.py bench --audit   the audit-log benchmark instead (bench/audit_bench.py: exports, writes)
    python3 dev.py bench --stream  the streaming and balancing benchmark (bench/stream_bench.py: SSE TTFB, 2 targets)

Set-up is idempotent: a virtualenv in .venv, the pinned requirements (re-installed
only when requirements*.txt change), and for tests the services they need.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def run(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=check, cwd=ROOT, **kwargs)


def ensure_venv(dev: bool) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 the machine has
        sys.exit("Python 3.11 or newer is needed (Django 5.2 LTS supports 3.10-3.13; we pin 3.11+).")
    if not PY.exists():
        say(f"creating virtualenv in {VENV}")
        run(sys.executable, "-m", "venv", VENV)
        run(PY, "-m", "pip", "install", "-q", "--upgrade", "pip")
    wanted = "requirements-dev.txt" if dev else "requirements.txt"
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in sorted(["requirements.txt", wanted])))
    stamp = VENV / f".installed-{wanted}"
    if not stamp.exists() or stamp.read_text() != digest.hexdigest():
        say(f"installing {wanted}")
        run(PY, "-m", "pip", "install", "-q", "-r", ROOT / wanted)
        stamp.write_text(digest.hexdigest())


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_listening(host, port, seconds=30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _listening(host, port):
            return True
        time.sleep(0.5)
    return False


def ensure_services() -> None:
    """Start the machine's PostgreSQL and Redis if they are installed but not running."""
    if not _listening("127.0.0.1", 5432):
        say("starting PostgreSQL")
        versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
        if versions and shutil.which("pg_ctlcluster"):
            run("pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start", check=False)
        if not _wait_listening("127.0.0.1", 5432):
            sys.exit("PostgreSQL is not running on 127.0.0.1:5432 and could not be started.")
    if not _listening("127.0.0.1", 6379):
        say("starting Redis")
        if shutil.which("redis-server"):
            run(
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "-::1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                check=False,
            )
        if not _wait_listening("127.0.0.1", 6379):
            sys.exit("Redis is not running on 127.0.0.1:6379 and could not be started.")


def ensure_chromium() -> None:
    """Debian's Chromium for the browser tests (Playwright drives it; it downloads no browser)."""
    if shutil.which("chromium"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("The browser tests need Debian's chromium: run 'apt-get install chromium' as root.")
    say("installing Debian's chromium for the browser tests")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env)
    run("apt-get", "install", "-y", "-qq", "chromium", env=env)


def cmd_run(args: list[str]) -> int:
    ensure_venv(dev=False)
    env = dict(os.environ)
    if "--embedded" in args:
        env = {k: v for k, v in env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    args = [a for a in args if a != "--embedded"]
    os.chdir(ROOT)
    # Become the demo, so Ctrl+C and SIGTERM reach it directly (it then stops the gateway and the mock).
    os.execve(PY, [str(PY), "manage.py", "demo", *args], env)


def deployed_environment() -> dict[str, str]:
    """A production deployment's settings, for Django's deploy check (nothing connects anywhere)."""
    return {
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "console.example.com,gateway.example.com",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "GATEWAY_AUDIT_CHAIN_KEY": secrets.token_hex(32),
        "GATEWAY_AUDIT_CHECKPOINT_KEY": secrets.token_hex(32),
        "GATEWAY_CREDENTIAL_KEYS": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "DATABASE_URL": POSTGRES_URL,
        "REDIS_URL": REDIS_URL,
    }


def cmd_test(args: list[str]) -> int:
    ensure_venv(dev=True)
    ensure_chromium()
    profiles = ["default", "production"]
    if args and args[0] in ("--default", "--production"):
        profiles = [args.pop(0)[2:]]
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    base["CELERY_TASK_ALWAYS_EAGER"] = "1"
    say("gates: ruff, manage.py check, makemigrations --check, check --deploy (production settings)")
    status = run(PY, "-m", "ruff", "check", ".", check=False).returncode
    status = status or run(PY, "-m", "ruff", "format", "--check", "--quiet", ".", check=False).returncode
    status = status or run(PY, "manage.py", "check", "--fail-level", "WARNING", check=False, env=base).returncode
    status = status or run(PY, "manage.py", "makemigrations", "--check", "--dry-run", check=False, env=base).returncode
    status = status or run(PY, "manage.py", "check", "--deploy", "--fail-level", "WARNING", check=False,
                           env={**base, **deployed_environment()}).returncode  # fmt: skip
    if status:
        return status
    for profile in profiles:
        env = dict(base)
        if profile == "production":
            ensure_services()
            env.update(DATABASE_URL=POSTGRES_URL, REDIS_URL=REDIS_URL)
        say(
            f"tests, {profile} profile"
            + (" (PostgreSQL + Redis)" if profile == "production" else " (SQLite, in-process)")
        )
        result = run(PY, "-m", "pytest", *args, check=False, env=env).returncode
        status = status or result
    return status


def cmd_bench(args: list[str]) -> int:
    ensure_venv(dev=True)
    ensure_services()
    script = "bench/run.py"
    if args[:1] == ["--audit"]:
        script, args = "bench/audit_bench.py", args[1:]
    elif args[:1] == ["--stream"]:
        script, args = "bench/stream_bench.py", args[1:]
    return run(PY, script, *args, check=False).returncode


def main() -> int:
    commands = {"run": cmd_run, "test": cmd_test, "bench": cmd_bench}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
