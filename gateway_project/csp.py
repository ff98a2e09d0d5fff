"""The console's Content-Security-Policy: scripts only from the console itself, or inline with this response's nonce.

A page of the console runs with an admin's rights; if anything ever managed to put
markup into one (an agent's name, a preview), the browser still runs no script the
console did not send. Inline scripts carry ``nonce="{{ csp_nonce }}"``.
"""

from __future__ import annotations

import secrets

from django.conf import settings

CONSOLE_PREFIXES = ("/console/",)


def csp_nonce(request) -> dict:
    """Template context: the nonce of this response's inline scripts."""
    return {"csp_nonce": getattr(request, "csp_nonce", "")}


class ConsoleCSPMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(CONSOLE_PREFIXES):
            return self.get_response(request)
        request.csp_nonce = nonce = secrets.token_urlsafe(16)
        response = self.get_response(request)
        policy = settings.GATEWAY_CONSOLE_CSP.replace("{nonce}", nonce)
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        return response
