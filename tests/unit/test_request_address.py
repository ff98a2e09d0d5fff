"""The console's and the API's client address follows the gateway's rule for trusted proxies."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from gateway_project.addresses import request_address


@pytest.mark.parametrize(
    ("trusted", "remote", "forwarded", "expected"),
    [
        (0, "198.51.100.7", "203.0.113.1", "198.51.100.7"),  # no proxy trusted: the header is anyone's
        (1, "10.0.0.2", "203.0.113.1", "203.0.113.1"),
        (1, "10.0.0.2", "6.6.6.6, 203.0.113.1", "203.0.113.1"),  # what the client wrote further left is ignored
        (2, "10.0.0.2", "6.6.6.6, 203.0.113.1, 10.0.0.3", "203.0.113.1"),
        (1, "10.0.0.2", "not-an-address", "10.0.0.2"),  # unusable: the peer
        (1, "10.0.0.2", "[2001:db8::5]:443", "2001:db8::5"),
        (1, "10.0.0.2", None, "10.0.0.2"),
        (1, "", None, None),
    ],
)
def test_the_request_address_is_the_hop_before_our_proxies(settings, trusted, remote, forwarded, expected):
    settings.GATEWAY = {**settings.GATEWAY, "TRUSTED_PROXIES": trusted}
    headers = {"REMOTE_ADDR": remote} | ({"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {})
    assert request_address(RequestFactory().get("/", **headers)) == expected
