"""The console's pages run only the scripts the console sent: a Content-Security-Policy with a nonce per response."""

from __future__ import annotations

import re


def test_a_console_page_carries_a_csp_whose_nonce_its_inline_scripts_carry(admin):
    page = admin.get("/console/budgets/new/")
    assert page.status_code == 200
    policy = page["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    scripts = re.findall(rb"<script([^>]*)>", page.content)
    inline = [attrs for attrs in scripts if b"src=" not in attrs]
    assert inline and all(f'nonce="{nonce}"'.encode() in attrs for attrs in inline)
    assert admin.get("/console/budgets/new/")["Content-Security-Policy"] != policy  # a nonce per response


def test_every_template_with_an_inline_script_gives_it_the_nonce():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for template in root.glob("*/templates/**/*.html"):
        for attrs in re.findall(r"<script([^>]*)>", template.read_text()):
            assert "src=" in attrs or 'nonce="{{ csp_nonce }}"' in attrs, template
