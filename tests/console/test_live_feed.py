"""The live feed: saved request records reach signed-in console users over a WebSocket."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.utils import timezone

from audit.consumers import LiveFeedConsumer
from audit.live import publish_batch
from audit.models import AuditRecord
from tests.waiting import DEADLINE_SECONDS


def make_user(name, role):
    user = get_user_model().objects.create_user(name)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def communicator(user):
    app = LiveFeedConsumer.as_asgi()
    comm = WebsocketCommunicator(app, "/ws/console/feed/")
    comm.scope["user"] = user
    return comm


def row(request_id, status=200):
    return {
        "request_id": request_id, "created_at": timezone.now(), "client_slug": "acme", "key_prefix": "agk_x",
        "agent": "research", "method": "POST", "path": "/v1/chat/completions", "status": status,
        "error_type": "", "latency_ms": 3.2, "input_tokens": 2, "output_tokens": 3, "cost_usd": "0.000001",
        "input_preview": "secret stays out", "client_ip": "127.0.0.1",
    }  # fmt: skip


# Sync tests driving the async consumer through async_to_sync: the consumer's database
# calls then run in the test's own thread, inside its transaction.


@pytest.mark.django_db
def test_a_console_user_receives_each_saved_batch():
    comm = communicator(make_user("olga", "operator"))

    async def scenario():
        connected, _ = await comm.connect()
        assert connected
        await publish_batch({AuditRecord: [row("r1"), row("r2", 429)]})
        message = await comm.receive_json_from(timeout=DEADLINE_SECONDS)
        await comm.disconnect()
        return message

    message = async_to_sync(scenario)()
    assert [r["request_id"] for r in message["requests"]] == ["r1", "r2"]
    assert message["requests"][1]["status"] == 429
    assert "input_preview" not in message["requests"][0]  # previews stay in the log, not the feed


@pytest.mark.django_db
@pytest.mark.parametrize("role", [None, "anonymous"])
def test_users_without_a_role_are_refused(role):
    user = AnonymousUser() if role == "anonymous" else make_user("nina", None)
    connected, code = async_to_sync(communicator(user).connect)()
    assert not connected and code == 4403
