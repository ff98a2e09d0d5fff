"""The README's run command: demo data, mock upstream and gateway, and a snippet that works."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx
import openai

from tests.servers import ROOT, free_port, server_env, stop


def test_the_demo_prints_a_key_and_snippets_that_work(tmp_path, live_db):
    from audit.models import AuditRecord

    port, mock_port = free_port(), free_port()
    env = server_env(SQLITE_PATH=tmp_path / "demo.sqlite3")  # a fresh embedded database when on SQLite
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "demo", "--port", str(port), "--mock-port", str(mock_port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = ""
        deadline = time.monotonic() + 120
        while "Press Ctrl+C" not in output and time.monotonic() < deadline and proc.poll() is None:
            output += proc.stdout.readline()
        assert "Press Ctrl+C" in output, output
        key = re.search(r"Demo client API key\s+(agk_\S+)", output).group(1)
        assert re.search(r"user: admin\s+password: \S+", output)
        assert f"http://127.0.0.1:{port}/console/" in output and f"http://127.0.0.1:{port}/admin/" in output
        assert "curl http://127.0.0.1:" in output and "from openai import OpenAI" in output

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
        )
        assert answer.choices[0].message.content == "Mock answer to: Say hello"
        curl_like = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "research", "messages": [{"role": "user", "content": "Find me three facts about otters"}]},
        )
        assert curl_like.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/admin/login/").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/console/login/").status_code == 200
    finally:
        stop(proc)
    if "DATABASE_URL" in env:  # the demo shared the test database: its audit records are there
        assert AuditRecord.objects.filter(request_id=curl_like.headers["x-request-id"]).exists()
    else:
        import sqlite3

        with sqlite3.connect(tmp_path / "demo.sqlite3") as db:
            found = db.execute(
                "select count(*) from audit_auditrecord where request_id = ?", (curl_like.headers["x-request-id"],)
            ).fetchone()[0]
        assert found == 1
