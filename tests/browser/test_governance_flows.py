"""Governance pages in headless Chromium: roles on a key, a policy rule written, refused when wrong, tested and in
force on live traffic."""

from __future__ import annotations

import json
import uuid

from tests.browser.test_console_flows import sign_in
from tests.waiting import until


def test_an_admin_writes_a_policy_rule_tests_it_and_the_gateway_enforces_it(gateway, page, console_admin,
                                                                            screenshot, make_key):  # fmt: skip
    from keys.models import PolicyRule

    raw, key = make_key()
    sign_in(page, gateway, *console_admin)
    name = f"ledger is finance's {uuid.uuid4().hex[:6]}"
    page.goto(f"{gateway.url}/console/policies/new/")
    page.fill("#id_name", name)
    page.fill("#id_condition", "request.agent ==")
    page.click("main button[type=submit]")
    assert "Line 1, column 17" in page.text_content("main")  # refused, with where
    page.fill("#id_condition", f"client.slug == '{key.client.slug}' && request.agent == 'research'")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{gateway.url}/console/policies/")
    assert page.locator(f'tr[data-rule="{name}"]').count() == 1
    screenshot(page, "policy-rules")

    page.goto(f"{gateway.url}/console/policies/test/")
    context = {"request": {"agent": "research"}, "client": {"slug": key.client.slug}}
    page.fill("#id_context", json.dumps(context))
    page.click("main button[type=submit]")
    assert "refused" in page.text_content("#policy-result")
    assert page.locator(f'tr[data-outcome="{name}"]').text_content().strip().endswith("matched")
    screenshot(page, "policy-test")

    with gateway.client(raw) as client:
        refused = until(
            lambda: (
                (r := client.post("/v1/agent/invoke", json={"agent": "research", "input": "hi"})).status_code == 403
                and r
            ),
            "the rule in force",
        )
    assert refused.json()["error"]["code"] == "policy_denied"
    PolicyRule.objects.filter(name=name).delete()


def test_an_admin_makes_a_role_and_gives_it_to_a_key(gateway, page, console_admin, make_key):
    from keys.models import AgentRole

    _, key = make_key()
    sign_in(page, gateway, *console_admin)
    slug = f"analyst-{uuid.uuid4().hex[:6]}"
    page.goto(f"{gateway.url}/console/roles/new/")
    page.fill("#id_slug", slug)
    page.fill("#id_name", "Analyst")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{gateway.url}/console/roles/")
    assert page.locator(f'tr[data-role="{slug}"]').count() == 1
    page.goto(f"{gateway.url}/console/clients/{key.client_id}/")
    page.locator(f'a[href="/console/keys/{key.pk}/roles/"]').click()
    page.get_by_label(f"{slug} (Analyst)").check()
    page.fill("#id_tags", "ci, batch")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{gateway.url}/console/clients/{key.client_id}/")
    assert page.text_content(f'td[data-roles="{key.pk}"]').strip() == slug
    key.refresh_from_db()
    assert (key.roles, key.tags) == ([slug], ["ci", "batch"])
    AgentRole.objects.filter(slug=slug).delete()


def test_the_top_navigation_fits_one_row_at_1280_pixels_and_each_area_shows_its_pages(gateway, page, console_admin,
                                                                                      screenshot):  # fmt: skip
    sign_in(page, gateway, *console_admin)  # an admin sees every area: the widest navigation
    for url in ["/console/", "/console/clients/", "/console/budgets/", "/console/audit/", "/console/users/"]:
        page.goto(f"{gateway.url}{url}")
        links = page.locator("header.top nav a")
        assert links.count() == 7
        tops = {round(box["y"]) for box in (links.nth(i).bounding_box() for i in range(links.count()))}
        assert len(tops) == 1, (url, tops)  # one row
    page.goto(f"{gateway.url}/console/policies/")
    assert page.locator("header.top nav a.active").text_content() == "Governance"
    page.goto(f"{gateway.url}/console/roles/")
    assert page.locator("nav.subnav a.active").text_content() == "Roles"
    assert page.locator("header.top nav a.active").text_content() == "Access"
    screenshot(page, "navigation")


def test_an_admin_drafts_a_rule_replays_it_over_past_traffic_and_publishes_it(
    gateway, page, console_admin, screenshot, make_key, audit_of
):
    from keys.models import PolicyRule

    raw, key = make_key()
    with gateway.client(raw) as client:
        answer = client.post("/v1/agent/invoke", json={"agent": "writing", "input": "hi"})
    assert answer.status_code == 200 and audit_of(answer)
    sign_in(page, gateway, *console_admin)
    name = f"no writing {uuid.uuid4().hex[:6]}"
    page.goto(f"{gateway.url}/console/policies/new/")
    page.fill("#id_name", name)
    page.fill("#id_condition", f"client.slug == '{key.client.slug}' && request.agent == 'writing'")
    page.check("#id_draft")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{gateway.url}/console/policies/")
    assert page.locator(f'#draft-table tr[data-draft="{name}"]').count() == 1

    page.goto(f"{gateway.url}/console/policies/what-if/")
    page.select_option("#id_window", "hour")
    page.click("#what-if-form button[type=submit]")
    page.wait_for_selector('#what-if-progress[data-status="done"]', timeout=30_000)
    assert key.client.slug in page.text_content("#by-client")
    assert name in page.text_content("#by-rule")
    assert answer.headers["x-request-id"] in page.text_content("#examples")
    screenshot(page, "policy-what-if")

    page.goto(f"{gateway.url}/console/policies/publish/")
    page.click("#confirm-publish")
    page.wait_for_url(f"{gateway.url}/console/policies/")
    assert page.locator(f'tr[data-rule="{name}"]').count() == 1
    with gateway.client(raw) as client:
        until(lambda: client.post("/v1/agent/invoke", json={"agent": "writing", "input": "hi"}).status_code == 403,
              "the published rule in force")  # fmt: skip
    PolicyRule.objects.filter(name=name).delete()


def test_an_admin_sets_a_guardrail_tries_it_and_the_gateway_redacts(gateway, page, console_admin, screenshot,
                                                                    make_key):  # fmt: skip
    from keys.models import Guardrail

    raw, key = make_key()
    sign_in(page, gateway, *console_admin)
    name = f"no e-mail {uuid.uuid4().hex[:6]}"
    page.goto(f"{gateway.url}/console/guardrails/new/")
    page.fill("#id_name", name)
    page.click("main button[type=submit]")  # no detector, no hook: refused, saying so
    assert "Choose a detector, or give a hook." in page.text_content("main")
    page.check("input[name=detectors][value=email]")
    page.select_option("#id_action", "redact")
    page.fill("#id_clients", key.client.slug)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{gateway.url}/console/guardrails/")
    assert page.locator(f'tr[data-guardrail="{name}"]').count() == 1
    screenshot(page, "guardrails")

    page.goto(f"{gateway.url}/console/guardrails/test/")
    page.fill("#id_text", "write to ada@example.com")
    page.click("main button[type=submit]")
    assert "[EMAIL]" in page.text_content(f'tr[data-result="{name}"]')

    with gateway.client(raw) as client:
        answer = until(lambda: (r := client.post("/v1/agent/invoke", json={"agent": "research",
                                                                           "input": "mail ada@example.com"}))
                       .status_code == 200 and "[EMAIL]" in r.text and r, "the guardrail in force")  # fmt: skip
    assert "ada@example.com" not in answer.json()["output"]
    Guardrail.objects.filter(name=name).delete()


def test_an_admin_adds_an_identity_provider_and_checks_its_keys(gateway, page, console_admin, screenshot):
    from keys.models import IdentityProvider
    from tests.identity_provider import Issuer

    issuer = Issuer()
    try:
        sign_in(page, gateway, *console_admin)
        slug = f"corp-{uuid.uuid4().hex[:6]}"
        page.goto(f"{gateway.url}/console/identity-providers/new/")
        page.fill("#id_name", "Corp IdP")
        page.fill("#id_slug", slug)
        page.fill("#id_issuer", issuer.issuer)
        page.fill("#id_audiences", "gateway")
        page.fill("#id_jwks_url", issuer.jwks_url)
        page.check("input[name=algorithms][value=ES256]")
        page.fill("#id_allowed_agents", "*")
        page.fill("#id_allowed_models", "*")
        page.click("main button[type=submit]")
        page.wait_for_url(f"{gateway.url}/console/identity-providers/")
        page.click(f'tr[data-provider="{slug}"] button[type=submit]')  # Check keys
        page.wait_for_selector("#jwks-check")
        assert page.get_attribute("#jwks-check", "data-ok") == "true"
        assert issuer.keys["ES256"].kid in page.text_content("#jwks-check")
        screenshot(page, "identity-provider-keys")
    finally:
        IdentityProvider.objects.filter(issuer=issuer.issuer).delete()
        issuer.stop()
