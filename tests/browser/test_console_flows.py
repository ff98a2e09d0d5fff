"""A person's way through the console, in a real browser, against the live gateway."""

from __future__ import annotations

import csv
import uuid

import httpx

from tests.waiting import until, wait_for

CHAT = {"model": "research", "messages": [{"role": "user", "content": "find facts about otters"}]}


def sign_in(page, gateway, username, password):
    page.goto(f"{gateway.url}/console/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{gateway.url}/console/")


def test_an_admin_issues_watches_rotates_revokes_and_exports(gateway, page, console_admin, screenshot):
    from audit.models import AuditRecord

    sign_in(page, gateway, *console_admin)

    # Create a client and a key; the key is shown once.
    slug = f"web-{uuid.uuid4().hex[:8]}"
    page.goto(f"{gateway.url}/console/clients/new/")
    page.fill("#id_name", "Web client")
    page.fill("#id_slug", slug)
    page.click("main button[type=submit]")
    page.get_by_text("New key").click()
    page.fill("#id_name", "browser key")
    page.fill("#id_requests_per_minute", "100")
    page.click("main button[type=submit]")
    raw = page.text_content("#raw-key").strip()
    assert raw.startswith("agk_")
    screenshot(page, "key-created")
    page.reload()
    assert page.locator("#raw-key").count() == 0 and raw not in page.content()

    # Call the gateway and watch the request arrive on the dashboard without reloading.
    page.goto(f"{gateway.url}/console/")
    page.wait_for_selector("#feed-status:has-text('live')")
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {raw}"})
    assert answer.status_code == 200
    page.wait_for_selector(f"tr[data-request-id='{answer.headers['x-request-id']}']")
    screenshot(page, "dashboard")

    # Rotate: a new key is shown once and both work during the grace period.
    # Searched for by its slug: other tests' clients ("Test client") sort before it and fill the first page.
    page.goto(f"{gateway.url}/console/clients/?q={slug}")
    page.get_by_role("link", name="Web client").first.click()
    page.locator(f"tr:has-text('{raw[:12]}')").get_by_text("Rotate").click()
    page.fill("#id_grace_hours", "1")
    page.click("main button[type=submit]")
    new_raw = page.text_content("#raw-key").strip()
    assert new_raw.startswith("agk_") and new_raw != raw
    for key in (raw, new_raw):
        ok = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200

    # Revoke the new key and see the gateway refuse it.
    page.goto(f"{gateway.url}/console/clients/?q={slug}")
    page.get_by_role("link", name="Web client").first.click()
    page.locator(f"tr:has-text('{new_raw[:12]}')").get_by_role("button", name="Revoke").click()
    page.wait_for_selector(".messages li.success")

    def refused():
        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {new_raw}"}
        )
        return answer.status_code != 200 and answer

    refusal = until(refused, "the gateway refuses the revoked key")  # every process drops it within a second
    assert refusal.status_code == 403 and refusal.json()["error"]["code"] == "key_revoked"

    # Filter the audit log to this client and export it.
    expected = wait_for(lambda: AuditRecord.objects.filter(client_slug=slug).count() >= 4 and True)
    assert expected
    count = AuditRecord.objects.filter(client_slug=slug).count()
    page.goto(f"{gateway.url}/console/audit/")
    page.fill("#id_client", slug)
    page.get_by_role("button", name="Filter").click()
    # htmx swaps the results in place: wait for the filtered count, not for the unfiltered page's.
    page.wait_for_selector(f".pagination:has-text('{count} in all')")
    assert f"{count} in all" in page.text_content(".pagination")
    screenshot(page, "audit")
    with page.expect_download() as download:
        page.get_by_text("Export CSV").click()
    rows = list(csv.DictReader(open(download.value.path(), newline="", encoding="utf-8")))
    assert len(rows) == count
    assert {row["client_slug"] for row in rows} == {slug}
    assert sorted(int(row["status"]) for row in rows) == [200, 200, 200, 403]


def test_filtering_the_audit_log_updates_the_table_in_place(gateway, page, console_admin):
    sign_in(page, gateway, *console_admin)
    page.goto(f"{gateway.url}/console/audit/")
    page.evaluate("window.__same_page = true")
    page.fill("#id_status", "599")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_selector("text=No requests match.")
    assert page.evaluate("window.__same_page === true")  # htmx swapped the results, no page load
    assert "status=599" in page.url  # and the address can be shared or reloaded


def test_an_admin_budgets_a_cost_center_and_sees_it_on_the_budgets_list(gateway, page, console_admin, screenshot):
    sign_in(page, gateway, *console_admin)
    tag = uuid.uuid4().hex[:8]

    # A cost center, then a client in it from the cost center's page.
    page.goto(f"{gateway.url}/console/cost-centers/new/")
    page.fill("#id_name", f"Team {tag}")
    page.fill("#id_slug", f"team-{tag}")
    page.click("main button[type=submit]")
    page.get_by_role("link", name="New client").click()
    page.fill("#id_name", f"Client {tag}")
    page.fill("#id_slug", f"client-{tag}")
    page.click("main button[type=submit]")
    page.get_by_role("link", name=f"Team {tag}").click()
    assert page.locator(f"text=Client {tag}").count() == 1

    # A budget for the cost center: the link picks the scope and target, only that target's select shows.
    page.get_by_role("link", name="New budget").click()
    assert page.is_visible("#id_cost_center") and not page.is_visible("#id_client")
    page.fill("#id_limit_usd", "250")
    page.select_option("#id_mode", "soft")
    page.click("main button[type=submit]")
    page.wait_for_selector(".messages li.success")
    screenshot(page, "budget-detail")

    page.goto(f"{gateway.url}/console/budgets/?scope=cost_center&q={tag}")
    row = page.locator("tr[data-budget]")
    assert row.count() == 1
    assert f"Team {tag}" in row.text_content() and "$250.00" in row.text_content() and "soft" in row.text_content()
    screenshot(page, "budgets")
