"""Headless Chromium (Debian's package) driven by Playwright, against a live gateway and console."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from django.db import connections

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
# The closed network refuses Chromium's background connections; keep it from trying.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module: Playwright's sync API keeps an event loop running in this
    thread while it lives, which later tests that start their own loop must not inherit."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}; python3 dev.py test installs it (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    # With that loop running, Django would refuse the tests' own (synchronous) ORM calls.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
            # The tests' ORM calls ran beside Playwright's loop, on connections of their own: close
            # them here, in that same context, or the test database cannot be dropped at the end.
            connections.close_all()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def screenshot():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def console_admin(live_db):
    """A console admin with a password, committed so the live server sees it."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    username = f"ada-{uuid.uuid4().hex[:8]}"
    password = "correct horse battery staple"
    user = get_user_model().objects.create_user(username, password=password)
    user.groups.add(Group.objects.get(name="admin"))
    return username, password
