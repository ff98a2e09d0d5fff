#!/usr/bin/env python3
"""Set up and run the project with nothing but Python installed.

    python3 dev.py run     set up, then start the mock upstream and the gateway with demo data
    python3 dev.py test    set up, then run the whole test suite on both profiles
    python3 dev.py bench   set up, then run the benchmark (production profile)
    python3 dev.py bench --audit   the audit-log benchmark instead (bench/audit_bench.py: exports, writes)
    python3 dev.py bench --stream  the streaming and balancing benchmark (bench/stream_bench.py: SSE TTFB, 2 targets)
    python3 dev.py lock    regenerate requirements.lock and requirements-dev.lock from requirements*.txt
                           (extra options go to uv pip compile, e.g. --upgrade-package NAME)

Set-up is idempotent: a virtualenv in .venv, the hash-pinned lock file (re-installed
with --require-hashes only when it changes), and for tests the services they need.
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
    wanted = "requirements-dev.lock" if dev else "requirements.lock"
    digest = hashlib.sha256((ROOT / wanted).read_bytes())
    stamp = VENV / f".installed-{wanted}"
    if not stamp.exists() or stamp.read_text() != digest.hexdigest():
        say(f"installing {wanted}")
        run(PY, "-m", "pip", "install", "-q", "--require-hashes", "-r", ROOT / wanted)
        stamp.write_text(digest.hexdigest())


def lock_gate() -> int:
    """The lock files cover requirements*.txt, and .venv holds exactly requirements-dev.lock (see lockcheck.py)."""
    import lockcheck

    problems = lockcheck.lock_problems(ROOT)
    hint = f"the lock files are out of date: run `{lockcheck.REGENERATE}` and commit requirements*.lock"
    if not problems:
        freeze = run(PY, "-m", "pip", "freeze", capture_output=True, text=True).stdout
        problems = lockcheck.venv_problems(ROOT, freeze)
        hint = (
            f".venv is not what requirements-dev.lock pins: for a new dependency add it to requirements-dev.txt and"
            f" run `{lockcheck.REGENERATE}`; otherwise `rm -r .venv` and set up again"
        )
    for problem in problems:
        print(f"lock: {problem}")
    if problems:
        print(f"lock: {hint}")
    return 1 if problems else 0


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
    say("gates: lock files, ruff, manage.py check, makemigrations --check, check --deploy (production settings)")
    status = lock_gate()
    status = status or run(PY, "-m", "ruff", "check", ".", check=False).returncode
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


def cmd_lock(args: list[str]) -> int:
    """Regenerate both lock files with uv (pinned in requirements-dev.txt) for CPython 3.11 on Linux x86_64.

    Each entry carries the hashes of every file PyPI lists for that version, so a deployer on another
    platform can install it too. uv keeps every pin already in a lock unless told to upgrade (pass
    --upgrade or --upgrade-package NAME), and reads no config file or UV_* setting that could change
    the result: the same inputs give the same files. The runtime lock is constrained to the dev lock,
    so what deploys is what the tests ran on.
    """
    import lockcheck

    pins = [r.pinned_version for r in lockcheck.parse_requirements(ROOT / "requirements-dev.txt") if r.name == "uv"]
    if not pins or not pins[0]:
        sys.exit("requirements-dev.txt must pin the lock files' generator: uv==<version>")
    if not PY.exists():
        run(sys.executable, "-m", "venv", VENV)
    uv = VENV / "bin" / "uv"
    found = run(uv, "--version", capture_output=True, text=True).stdout.split() if uv.exists() else []
    if found[1:2] != pins[:1]:
        say(f"installing uv {pins[0]}")
        try:
            locked = lockcheck.parse_lock((ROOT / "requirements-dev.lock").read_text()).get("uv")
        except (OSError, lockcheck.LockFormatError):  # no lock yet, or a broken one this run replaces
            locked = None
        if locked and locked.version == pins[0]:  # with the hashes the lock already trusts
            hashes = " ".join(f"--hash={h}" for h in locked.hashes)
            (VENV / "uv-requirement.txt").write_text(f"uv=={locked.version} {hashes}\n")
            source = ["--require-hashes", "--no-deps", "-r", VENV / "uv-requirement.txt"]
        else:  # a new uv pin: trusted on first use, then hash-pinned in the lock
            source = [f"uv=={pins[0]}"]
        run(PY, "-m", "pip", "install", "-q", "--force-reinstall", *source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_") or k in ("UV_CACHE_DIR", "UV_NATIVE_TLS")}
    compile_ = [uv, "pip", "compile", "--quiet", "--no-config", "--default-index", "https://pypi.org/simple"]
    compile_ += ["--generate-hashes", "--python-version", "3.11", "--python-platform", "x86_64-unknown-linux-gnu"]
    compile_ += ["--custom-compile-command", lockcheck.REGENERATE]
    say("locking requirements-dev.txt -> requirements-dev.lock")
    status = run(*compile_, *args, "requirements-dev.txt", "-o", "requirements-dev.lock", check=False, env=env)
    if status.returncode:
        return status.returncode
    say("locking requirements.txt -> requirements.lock (constrained to requirements-dev.lock)")
    status = run(
        *compile_, "-c", "requirements-dev.lock", "requirements.txt", "-o", "requirements.lock", check=False, env=env
    )
    if status.returncode:
        return status.returncode
    problems = lockcheck.lock_problems(ROOT)
    for problem in problems:
        print(f"lock: {problem}")
    return 1 if problems else 0


def main() -> int:
    commands = {"run": cmd_run, "test": cmd_test, "bench": cmd_bench, "lock": cmd_lock}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
