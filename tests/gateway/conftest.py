"""Fixtures the gateway's tests share: an identity provider on loopback and its configuration; guardrails; agents
made for a test and a canned upstream."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.identity_provider import Issuer


@pytest.fixture
def issuer():
    made = Issuer()
    yield made
    made.stop()


@pytest.fixture
def provider(issuer, live_db, make_key):
    """An active provider for ``issuer`` whose tokens name their client by the ``client_id`` claim, and a client
    (``provider.client_slug``)."""
    from keys.models import IdentityProvider

    _, key = make_key()
    made = IdentityProvider(name="Test IdP", slug=f"idp-{uuid.uuid4().hex[:8]}", issuer=issuer.issuer,
                            audiences=["gateway"], jwks_url=issuer.jwks_url, requests_per_minute=1000)  # fmt: skip
    made.full_clean()
    made.save()
    made.client_slug = key.client.slug
    yield made
    made.delete()


@pytest.fixture
def guardrails(live_db):
    """``guardrails(**fields)``: an active guardrail, deleted after the test (each names its test's client)."""
    from keys.models import Guardrail

    made = []

    def make(**fields):
        rail = Guardrail(name=f"rail {uuid.uuid4().hex[:8]}", **fields)
        rail.full_clean()
        rail.save()
        made.append(rail)
        return rail

    yield make
    Guardrail.objects.filter(pk__in=[rail.pk for rail in made]).delete()


@pytest.fixture
def agents(live_db, seeded, gateway, wait_for_agent):
    """``agents(url, kind="agent", **fields)``: a new agent, once the gateway has loaded it."""
    from routing.models import Agent

    made = []

    def make(url, kind="agent", **fields):
        fields = {"served_models": [], "default_model": "gpt-4o-mini", "timeout_seconds": 5, "max_retries": 0,
                  **fields}  # fmt: skip
        agent = Agent.objects.create(slug=f"g-{uuid.uuid4().hex[:8]}", name="g", kind=kind, upstream_url=url, **fields)
        made.append(agent)
        wait_for_agent(agent.slug, gateway)
        return agent

    yield make
    for agent in reversed(made):
        agent.delete()


class Canned:
    """An upstream on loopback answering, per path, what the test set: (status, headers, body). Each request's path
    and body are kept in ``seen``, its headers (names in lower case) in ``heads``."""

    def __init__(self):
        self.answers: dict[str, tuple[int, dict, bytes]] = {}
        self.seen: list[tuple[str, bytes]] = []
        self.heads: list[dict[str, str]] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("content-length") or 0)
                canned.seen.append((self.path, self.rfile.read(length)))
                canned.heads.append({name.lower(): value for name, value in self.headers.items()})
                status, headers, body = canned.answers.get(self.path.split("?")[0], (404, {}, b"{}"))
                self.send_response(status)
                for name, value in {"content-length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set(self, path, body, status=200, content_type="application/json", **headers):
        body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers[path] = (status, {"content-type": content_type, **headers}, body)


@pytest.fixture
def canned():
    made = Canned()
    yield made
    made.server.shutdown()
    made.server.server_close()
