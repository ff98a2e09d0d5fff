"""Fixtures the gateway's tests share: an identity provider on loopback and its configuration; guardrails."""

from __future__ import annotations

import uuid

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
