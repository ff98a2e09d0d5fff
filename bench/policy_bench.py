#!/usr/bin/env python3
"""The policy stage's cost per request: the request's context built and 20 rules decided.

    .venv/bin/python bench/policy_bench.py [--rules 20] [--requests 20000]

Runs ``routing.governance.request_context`` and ``PolicySet.decide`` (``keys.policy``) in
this process, as the hot path calls them, on a rule set of ``--rules`` rules of the kinds
the README shows (address allow-lists, tags, agents and hours, body caps), in three cases:

- **steady**: requests that repeat what the rules read (one client, agent and address):
  the decision is remembered, one look-up a request;
- **varied**: every request differs in what the rules read (its address and its body's
  size), so no decision is remembered: the rules that read those run (the others' outcomes
  are remembered by their own values);
- **none**: no rules at all, the cost every gateway without a policy pays.

The target (issue 14): under 30 µs a request with 20 rules.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

import django

django.setup()

from keys.access import KeySnapshot  # noqa: E402
from keys.policy import compile_rules  # noqa: E402
from routing.facts import Demand, RequestFacts  # noqa: E402
from routing.governance import request_context  # noqa: E402

KINDS = [
    "client.slug == 'team-{i}' && !ip_in(request.ip, ['10.0.0.0/8', '192.168.0.0/16'])",
    "request.agent == 'ledger-{i}' && !('finance' in client.tags)",
    "request.agent == 'code-{i}' && (hour(now, 'Europe/Berlin') < 7 || hour(now, 'Europe/Berlin') >= 20)",
    "request.route == '/search-{i}' && request.body_bytes > 100000",
    "'contractor-{i}' in key.tags && request.model.startsWith('gpt-4o')",
]


def rules(count: int):
    rows = [
        SimpleNamespace(
            pk=i,
            name=f"rule {i}",
            effect="deny",
            condition=KINDS[i % len(KINDS)].format(i=i),
            final=False,
            dry_run=i % 4 == 3,
            message="",
        )
        for i in range(count)
    ]
    return compile_rules(rows)


def request(ip: str, body_bytes: int = 1200):
    key = KeySnapshot(
        key_id=1, prefix="agk_bench", client_id=1, client_slug="acme", cost_center_id=None, state="active",
        expires_at=None, allowed_agents=None, allowed_models=None, requests_per_minute=60, requests_per_day=0,
        tokens_per_minute=100_000, max_concurrent=10, issued_at=0.0, audit_previews=True,
        roles=frozenset({"analyst"}), client_tags=("finance",), key_tags=("ci",), cost_center_slug="research",
    )  # fmt: skip
    route = SimpleNamespace(slug="research")
    facts = RequestFacts("r", key, route, None, "gpt-4o-mini", None, Demand(300, None, None, 60.0))
    ex = SimpleNamespace(body=b"x" * body_bytes, model="gpt-4o-mini", method="POST", path="/v1/chat/completions",
                         client_ip=ip)  # fmt: skip
    return ex, facts


def per_request(policy, requests) -> float:
    started = time.perf_counter()
    for ex, facts in requests:
        if policy:  # as ``routing.governance.govern``: no rules, no context
            policy.decide(request_context(ex, facts))
    return (time.perf_counter() - started) / len(requests) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    steady = [request("10.1.2.3")] * args.requests
    varied = [
        request(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", 1000 + i % 5000) for i in range(args.requests)
    ]
    policy = rules(args.rules)
    per_request(policy, steady[:1000])  # warm: the first decision, the zone and network caches
    results = {
        "none (no rules)": per_request(rules(0), steady),
        f"steady ({args.rules} rules, decision remembered)": per_request(policy, steady),
        f"varied ({args.rules} rules, a new address and body size every request)": per_request(
            rules(args.rules), varied
        ),
    }
    width = max(map(len, results))
    for name, micros in results.items():
        print(f"{name:<{width}}  {micros:7.2f} µs a request")


if __name__ == "__main__":
    main()
