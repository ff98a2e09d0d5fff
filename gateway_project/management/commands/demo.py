"""Start everything for a first look: mock upstream, demo data and the gateway."""

import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from gateway_project.demo import seed_admin, seed_agents, seed_demo_client

SNIPPET = """
  Console                   http://{host}:{port}/console/   user: admin   password: {password}
  Django admin              http://{host}:{port}/admin/     (same login)
  Gateway                   http://{host}:{port}/v1/
  API docs                  http://{host}:{port}/api/docs/
  Demo client API key       {key}
                            (shown once; run this command again for a new one)

  Try it with curl:

    curl http://{host}:{port}/v1/chat/completions \\
      -H "Authorization: Bearer {key}" \\
      -H "Content-Type: application/json" \\
      -d '{{"model": "research", "messages": [{{"role": "user", "content": "Find me three facts about otters"}}]}}'

  Or with the OpenAI SDK (pip install openai):

    from openai import OpenAI
    client = OpenAI(base_url="http://{host}:{port}/v1", api_key="{key}")
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{{"role": "user", "content": "Say hello"}}])
    print(answer.choices[0].message.content)

  Every request lands in the audit log: http://{host}:{port}/console/audit/ (live on the dashboard)
  Press Ctrl+C to stop.
"""


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CommandError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}.")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise CommandError(f"Nothing listens on {host}:{port} after {seconds} s.")


class Command(BaseCommand):
    help = "Seed demo data, start the mock upstream and the gateway, and print how to call it."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--mock-port", type=int, default=9100)
        parser.add_argument("--workers", type=int, default=1)

    def handle(self, *args, **opts):
        host, port, mock_port = opts["host"], opts["port"], opts["mock_port"]
        call_command("migrate", verbosity=0, interactive=False)
        call_command("collectstatic", verbosity=0, interactive=False)
        seed_agents(f"http://127.0.0.1:{mock_port}")
        password = seed_admin()
        key = seed_demo_client()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        mock = subprocess.Popen(
            [sys.executable, "-m", "routing.mock_upstream", "--port", str(mock_port)], cwd=settings.BASE_DIR, env=env
        )
        gateway = None
        try:
            _wait_for_port("127.0.0.1", mock_port, mock)
            gateway = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "rungateway",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--workers",
                    str(opts["workers"]),
                ],
                cwd=settings.BASE_DIR,
                env=env,
            )
            _wait_for_port(host, port, gateway)
            self.stdout.write(SNIPPET.format(host=host, port=port, password=password, key=key))
            signal.signal(signal.SIGTERM, lambda *a: gateway.send_signal(signal.SIGTERM))
            gateway.wait()
        except KeyboardInterrupt:
            pass
        finally:
            for proc in (gateway, mock):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
