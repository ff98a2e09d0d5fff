"""The one sign-in throttle, for the console's sign-in and Django admin's: by real address and by username.

Two limits, counted in the cache by django-ratelimit (shared by every process in
production, Redis):

- every attempt from one address (``GATEWAY_LOGIN_RATE``, the address as
  ``gateway_project.addresses`` finds it behind the trusted proxies; an IPv6
  address counts with its /64), so one address spraying many usernames is stopped;
- every *failed* attempt at one username, whatever the address
  (``GATEWAY_LOGIN_USERNAME_RATE``), so rotating addresses against one account is
  stopped too. A correct password does not count against its name.

A throttled attempt is refused before the password is checked (the answer says
nothing about it), with a form error and status 429, and recorded as an event.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django_ratelimit.core import get_usage

from gateway_project import auth_events
from gateway_project.addresses import counted_as, request_address
from gateway_project.models import AuthEvent

ADDRESS_GROUP = "signin:address"
USERNAME_GROUP = "signin:username"
IPV6_PREFIX = 64  # one subscriber's addresses: rotating within them is not a new address


@dataclass(frozen=True)
class Throttled:
    """Why an attempt was refused unchecked, and for how long the limit holds."""

    limit: str  # "address" or "username"
    retry_after: int

    @property
    def message(self) -> str:
        wait = _duration(self.retry_after)
        if self.limit == "address":
            return f"Too many sign-in attempts from your address. Try again in {wait}."
        return f"Too many failed sign-ins for this username. Try again in {wait}."


def _duration(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    minutes = -(-seconds // 60)
    return f"{minutes} minutes"


def _address_key(request) -> str:
    return counted_as(request_address(request), IPV6_PREFIX)


def _username_key(username: str) -> str:
    return username.casefold()


def _usage(request, group: str, value: str, rate: str, increment: bool) -> dict | None:
    return get_usage(request, group=group, key=lambda _group, _request: value, rate=rate, increment=increment)


def check(request, username: str) -> Throttled | None:
    """Count this attempt against its address; refuse it if its address or its username is over the limit."""
    refusal = None
    usage = _usage(request, ADDRESS_GROUP, _address_key(request), settings.LOGIN_RATE, increment=True)
    if usage and usage["should_limit"]:
        refusal = Throttled("address", max(1, usage["time_left"]))
    elif username:
        usage = _usage(request, USERNAME_GROUP, _username_key(username), settings.LOGIN_USERNAME_RATE, increment=False)
        # Not counted here: only failures count, so the name is refused once its failures reach the limit.
        if usage and usage["count"] >= usage["limit"]:
            refusal = Throttled("username", max(1, usage["time_left"]))
    if refusal is not None:
        request.signin_throttled = refusal
        rate = settings.LOGIN_RATE if refusal.limit == "address" else settings.LOGIN_USERNAME_RATE
        user = auth_events.user_named(username)
        detail = f"{refusal.limit} limit ({rate})"
        auth_events.record(request, AuthEvent.THROTTLED, username, user, detail, once_a_minute=True)
    return refusal


def count_failure(request, username: str) -> None:
    """A wrong password (or an unknown name) for ``username``: counts against the name from every address."""
    if username:
        _usage(request, USERNAME_GROUP, _username_key(username), settings.LOGIN_USERNAME_RATE, increment=True)


def answer(request, response):
    """``response`` as a 429 with ``Retry-After`` when the attempt was throttled."""
    refusal = getattr(request, "signin_throttled", None)
    if refusal is not None and request.method == "POST":
        response.status_code = 429
        response["Retry-After"] = str(refusal.retry_after)
    return response


class ThrottledSignInMixin:
    """An authentication form that asks the throttle first and tells it of each failure."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        refusal = check(self.request, username)
        if refusal is not None:
            raise ValidationError(refusal.message, code="throttled")
        try:
            return super().clean()
        except ValidationError:
            if self.user_cache is None:
                # Wrong username or password: Django's user_login_failed signal recorded it.
                count_failure(self.request, username)
            else:
                auth_events.record(
                    self.request, AuthEvent.REFUSED, username, self.user_cache, "this account may not sign in here"
                )
            raise


class SignInForm(ThrottledSignInMixin, AuthenticationForm):
    """The console's sign-in form."""


class AdminSignInForm(ThrottledSignInMixin, AdminAuthenticationForm):
    """Django admin's sign-in form (staff only), under the same throttle."""
