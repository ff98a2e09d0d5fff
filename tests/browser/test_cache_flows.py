"""The response cache in headless Chromium: an admin turns it on for an agent, the gateway answers from it, the
agent's page shows the hit rate and the saving, and forgetting makes the next request go upstream again."""

from __future__ import annotations

import uuid

from tests.browser.test_console_flows import sign_in
from tests.waiting import until, wait_for


def test_an_admin_turns_on_an_agents_cache_and_sees_what_it_saved(
    gateway, page, console_admin, screenshot, make_key, seeded, wait_for_agent
):
    from audit.models import AuditRecord
    from routing.models import Agent

    agent = Agent.objects.create(
        slug=f"cached-{uuid.uuid4().hex[:8]}", name="Cached", kind="openai", upstream_url=seeded.url,
        served_models=[], default_model="gpt-4o-mini",
    )  # fmt: skip
    wait_for_agent(agent.slug, gateway)
    raw, _ = make_key()
    sign_in(page, gateway, *console_admin)
    page.goto(f"{gateway.url}/console/agents/{agent.pk}/edit/")
    page.check("#id_cache_enabled")
    page.fill("#id_cache_ttl_seconds", "0")
    page.click("main form.stacked button[type=submit]")
    assert "Ensure this value is greater than or equal to 1." in page.text_content("main")  # refused, field named
    page.check("#id_cache_enabled")
    page.fill("#id_cache_ttl_seconds", "600")
    page.click("main form.stacked button[type=submit]")
    page.wait_for_url(f"{gateway.url}/console/agents/")

    body = {"model": agent.slug, "messages": [{"role": "user", "content": "cache me"}], "temperature": 0}

    def ask():
        with gateway.client(raw) as client:
            answer = client.post("/v1/chat/completions", json=body)
        if answer.headers.get("x-gateway-cache") == "miss":  # kept once sent: wait for its record
            request_id = answer.headers["x-request-id"]
            wait_for(lambda: AuditRecord.objects.filter(request_id=request_id).exists())
        return answer

    until(lambda: ask().headers.get("x-gateway-cache") == "hit", "the gateway answers from the agent's cache")
    assert ask().headers["x-gateway-cache"] == "hit"

    page.goto(f"{gateway.url}/console/agents/{agent.pk}/edit/")
    panel = page.locator("#response-cache")
    assert panel.is_visible()
    until(lambda: int(page.reload() and page.text_content("#cache-hits")) >= 2, "the page counts the hits")
    assert page.text_content("#cache-hit-rate").endswith("%")
    assert float(page.text_content("#cache-saved").lstrip("$")) > 0
    screenshot(page, "agent-response-cache")
    page.click("#response-cache button[type=submit]")
    assert "are forgotten" in page.text_content("main")
    assert ask().headers["x-gateway-cache"] == "miss"
    agent.delete()
