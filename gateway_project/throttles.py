"""Per-user limits on the management API's costly actions: whole-chain verification and export jobs.

A view names its costly actions and their scope in ``action_throttle_scopes``
(``{"verify": "verify"}``); the rates are the settings' ``DEFAULT_THROTTLE_RATES``
(GATEWAY_VERIFY_RATE, GATEWAY_EXPORT_RATE). Every other request is limited by
the per-user rate alone.
"""

from types import SimpleNamespace

from drf_spectacular.utils import OpenApiResponse
from rest_framework.throttling import ScopedRateThrottle

VERIFY = "verify"
EXPORT = "export"
THROTTLED = OpenApiResponse(description="Too many of these lately; try again after the Retry-After header's seconds.")


class ActionRateThrottle(ScopedRateThrottle):
    """DRF's scoped throttle, with the scope chosen by the viewset's action rather than the whole view."""

    def allow_request(self, request, view):
        scope = getattr(view, "action_throttle_scopes", {}).get(getattr(view, "action", None))
        if scope is None:
            return True
        self.scope = scope
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super(ScopedRateThrottle, self).allow_request(request, view)


def console_wait(request, scope: str) -> int:
    """The console's share of the API's limit on ``scope``: the same rate and the same count per user, so a costly
    job cannot be asked for past its limit by switching from the API to a form. 0: go on; else seconds to wait."""
    throttle = ActionRateThrottle()
    if throttle.allow_request(request, SimpleNamespace(action_throttle_scopes={"console": scope}, action="console")):
        return 0
    return max(1, round(throttle.wait() or 1))
