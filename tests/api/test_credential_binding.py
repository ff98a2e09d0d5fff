"""An upstream credential goes only to the host it was set for: an operator who cannot read an agent's key cannot
send it elsewhere by moving the agent's URL or by adding (or moving) a target."""

from __future__ import annotations

import pytest

from audit.models import AdminAction
from audit.trail import mask
from routing.models import Agent, Target
from routing.table import route_of

SECRET = "sk-provider-7d1e0b"


@pytest.fixture
def agent(db):
    return Agent.objects.create(
        slug="provider", name="Provider", kind="openai", upstream_url="http://10.0.0.5:9000/v1", upstream_api_key=SECRET
    )


def patch(api, agent, **fields):
    response = api.patch(f"/api/v1/agents/{agent.pk}/", fields, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def stored(agent) -> str:
    return Agent.objects.get(pk=agent.pk).upstream_api_key


def test_moving_the_url_to_another_host_clears_the_stored_credential_and_says_so(operator_api, agent):
    body = patch(operator_api, agent, upstream_url="http://attacker.example.com/v1")
    assert body["upstream_api_key_cleared"] is True and body["has_upstream_api_key"] is False
    assert stored(agent) == ""
    assert route_of(Agent.objects.get(pk=agent.pk)).upstream_api_key == ""  # nothing goes to the new host
    change = AdminAction.objects.get(object_type="routing.agent", action="update").changes
    assert change["upstream_api_key"] == [mask(SECRET), ""]


def test_a_new_url_with_a_new_credential_in_the_same_request_keeps_the_new_one(operator_api, api, agent):
    body = patch(operator_api, agent, upstream_url="http://api.example.com/v1", upstream_api_key="sk-new")
    assert body["upstream_api_key_cleared"] is False and body["has_upstream_api_key"] is True
    assert stored(agent) == "sk-new"
    trail = api.get("/api/v1/admin-actions/?object_type=routing.agent").content.decode()
    assert mask("sk-new") in trail and "sk-new" not in trail.replace(mask("sk-new"), "") and SECRET not in trail


def test_a_credential_longer_than_500_characters_is_a_validation_error(operator_api, agent):
    response = operator_api.patch(f"/api/v1/agents/{agent.pk}/", {"upstream_api_key": "k" * 501}, format="json")
    assert response.status_code == 400 and "upstream_api_key" in response.json()


def test_retyping_the_same_credential_with_the_new_url_keeps_it(operator_api, agent):
    body = patch(operator_api, agent, upstream_url="http://api.example.com/v1", upstream_api_key=SECRET)
    assert body["upstream_api_key_cleared"] is False and stored(agent) == SECRET


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:9000/v2",  # another path
        "http://10.0.0.5:9000",  # no path
        "HTTP://10.0.0.5:9000/v1/",  # the scheme's case
        "http://10.0.0.5:9000/v1?region=eu",  # a query
    ],
)
def test_a_change_of_path_keeps_the_credential(operator_api, agent, url):
    body = patch(operator_api, agent, upstream_url=url)
    assert body["upstream_api_key_cleared"] is False and stored(agent) == SECRET


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:9001/v1",  # another port
        "https://10.0.0.5:9000/v1",  # another scheme
        "http://10.0.0.6:9000/v1",  # another address
        "http://127.0.0.1:9000/v1",
    ],
)
def test_a_change_of_scheme_address_or_port_clears_it(operator_api, agent, url):
    body = patch(operator_api, agent, upstream_url=url)
    assert body["upstream_api_key_cleared"] is True and stored(agent) == ""


def test_spellings_of_the_same_host_keep_it_and_lookalikes_do_not(operator_api, db):
    named = Agent.objects.create(
        slug="named", name="Named", upstream_url="https://api.example.com/v1", upstream_api_key=SECRET
    )
    for same in ("https://API.Example.COM/v1", "https://api.example.com./v1", "https://api.example.com:443/v2"):
        assert patch(operator_api, named, upstream_url=same)["upstream_api_key_cleared"] is False, same
        assert stored(named) == SECRET
    for other in ("https://api.example.com.evil.example.com/v1", "https://api2.example.com/v1"):
        named.refresh_from_db()
        named.upstream_api_key = SECRET
        named.upstream_url = "https://api.example.com/v1"
        named.save()
        assert patch(operator_api, named, upstream_url=other)["upstream_api_key_cleared"] is True, other


def test_an_international_host_name_is_one_host_however_it_is_spelled(db):
    agent = Agent.objects.create(
        slug="idn", name="IDN", upstream_url="https://xn--bcher-kva.example.com/v1", upstream_api_key=SECRET
    )
    agent.upstream_url = "https://BÜCHER.example.com/v2"
    agent.save()
    assert not agent.credential_cleared and stored(agent) == SECRET
    agent.upstream_url = "https://bucher.example.com/v2"  # a lookalike without the umlaut
    agent.save()
    assert agent.credential_cleared and stored(agent) == ""


def test_an_address_is_one_host_however_it_is_spelled(db):
    agent = Agent.objects.create(slug="v6", name="v6", upstream_url="http://[::1]:9000", upstream_api_key=SECRET)
    agent.upstream_url = "http://[0:0::1]:9000/x"
    agent.save()
    assert not agent.credential_cleared and stored(agent) == SECRET


def test_a_save_that_does_not_touch_the_url_keeps_the_credential(operator_api, agent):
    body = patch(operator_api, agent, name="Renamed", timeout_seconds=12)
    assert body["upstream_api_key_cleared"] is False and stored(agent) == SECRET


def test_the_credential_never_appears_in_an_answer(operator_api, agent):
    Target.objects.create(agent=agent, name="t1", url="http://10.0.0.7:9000", upstream_api_key=SECRET + "-t")
    for path in ("/api/v1/agents/", f"/api/v1/agents/{agent.pk}/", "/api/v1/targets/", "/api/v1/schema/"):
        assert SECRET not in operator_api.get(path).content.decode(), path
    created = operator_api.post(
        "/api/v1/targets/",
        {"agent": "provider", "name": "t2", "url": "http://10.0.0.8:9000", "upstream_api_key": "sk-target-2"},
        format="json",
    )
    assert created.status_code == 201 and "sk-target-2" not in created.content.decode()


# --- targets ---------------------------------------------------------------------------------------------------


def create_target(api, **fields):
    response = api.post("/api/v1/targets/", {"agent": "provider", "name": "t", **fields}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def credential_of(target_name: str) -> str:
    [target] = route_of(Agent.objects.get(slug="provider")).targets
    assert target.name == target_name
    return target.upstream_api_key


def test_a_target_on_another_host_is_not_sent_the_agents_credential(operator_api, agent):
    body = create_target(operator_api, url="http://attacker.example.com:9000/v1")
    assert body["credential_source"] == "none" and body["has_upstream_api_key"] is False
    assert credential_of("t") == ""


def test_a_target_on_the_agents_own_origin_is_sent_the_agents_credential(operator_api, agent):
    body = create_target(operator_api, url="http://10.0.0.5:9000/v1-canary")
    assert body["credential_source"] == "agent"
    assert credential_of("t") == SECRET


def test_a_target_with_its_own_credential_is_sent_that(operator_api, agent):
    body = create_target(operator_api, url="http://10.0.0.9:9000/v1", upstream_api_key="sk-target")
    assert body["credential_source"] == "own" and body["has_upstream_api_key"] is True
    assert credential_of("t") == "sk-target"


def test_moving_a_target_to_another_host_clears_its_own_credential(operator_api, agent):
    target = Target.objects.create(agent=agent, name="t", url="http://10.0.0.9:9000", upstream_api_key="sk-target")
    moved = operator_api.patch(f"/api/v1/targets/{target.pk}/", {"url": "http://10.0.0.10:9000"}, format="json")
    assert moved.status_code == 200
    assert moved.json()["upstream_api_key_cleared"] is True and moved.json()["credential_source"] == "none"
    assert Target.objects.get(pk=target.pk).upstream_api_key == ""
    kept = operator_api.patch(
        f"/api/v1/targets/{target.pk}/", {"url": "http://10.0.0.11:9000", "upstream_api_key": "sk-11"}, format="json"
    )
    assert kept.json()["upstream_api_key_cleared"] is False and credential_of("t") == "sk-11"
    path_only = operator_api.patch(f"/api/v1/targets/{target.pk}/", {"url": "http://10.0.0.11:9000/v2"}, format="json")
    assert path_only.json()["upstream_api_key_cleared"] is False and credential_of("t") == "sk-11"


def test_moving_the_agent_away_from_its_targets_leaves_them_nothing_of_its_credential(operator_api, agent):
    Target.objects.create(agent=agent, name="t", url="http://10.0.0.5:9000/canary")
    assert credential_of("t") == SECRET
    patch(operator_api, agent, upstream_url="http://10.0.0.99:9000/v1", upstream_api_key="sk-elsewhere")
    assert credential_of("t") == ""  # the agent's new credential was set for its new host, not the target's
