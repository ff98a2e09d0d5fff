"""The outbound address policy as a unit: every refused IPv4 address and each of its IPv6 embeddings is refused,
public addresses pass, allow-listed ones pass, and URLs are judged by what they spell without DNS."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_project import outbound
from gateway_project.outbound import AllowList, Refused, address_refusal, check_static, refusal

REFUSED_V4 = [net for net, _ in outbound.REFUSED_V4]
NO_ONE = AllowList()


def addresses_in(network) -> st.SearchStrategy:
    first = int(network.network_address)
    return st.integers(first, first + network.num_addresses - 1).map(
        lambda n: ipaddress.ip_address(n) if network.version == 6 else ipaddress.IPv4Address(n)
    )


refused_v4 = st.sampled_from(REFUSED_V4).flatmap(addresses_in)
public_v4 = (
    st.integers(0, 2**32 - 1)
    .map(ipaddress.IPv4Address)
    .filter(lambda ip: not any(ip in net for net in REFUSED_V4) and ip not in outbound.METADATA_ADDRESSES)
)
public_v6 = st.integers(0x2000 << 112, (0x4000 << 112) - 1).map(ipaddress.IPv6Address).filter(
    lambda ip: not ip.teredo and not ip.sixtofour and not any(ip in net for net, _ in outbound.REFUSED_V6)
    and ip not in ipaddress.ip_network("2001::/23") and ip.is_global
)  # fmt: skip


def embeddings(v4: ipaddress.IPv4Address) -> list[ipaddress.IPv6Address]:
    """Every way an IPv6 address carries ``v4``: mapped, compatible, translated, NAT64 (well-known and local-use),
    6to4, and Teredo (as the client, bits inverted, and as the server)."""
    n = int(v4)
    public_server = int(ipaddress.IPv4Address("65.54.227.120"))
    return [
        ipaddress.IPv6Address(f"::ffff:{v4}"),
        ipaddress.IPv6Address(n),
        ipaddress.IPv6Address(f"::ffff:0:{v4}"),
        ipaddress.IPv6Address(f"64:ff9b::{v4}"),
        ipaddress.IPv6Address((0x0064FF9B0001 << 80) | n),
        ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | 1),
        ipaddress.IPv6Address((0x20010000 << 96) | (public_server << 64) | (~n & 0xFFFFFFFF)),
        ipaddress.IPv6Address((0x20010000 << 96) | (n << 64) | (~public_server & 0xFFFFFFFF)),
    ]


@given(refused_v4)
def test_every_address_in_a_refused_range_is_refused_and_so_is_each_ipv6_form_of_it(ip):
    assert address_refusal(ip)
    for form in embeddings(ip):
        if ip == ipaddress.IPv4Address(0) and form == ipaddress.IPv6Address(0):
            continue  # :: is the IPv6 unspecified address, refused in its own right below
        assert address_refusal(form), form


@given(public_v4)
def test_public_ipv4_addresses_pass_and_so_do_their_ipv6_forms_that_reach_them(ip):
    assert address_refusal(ip) == ""
    for form in (ipaddress.IPv6Address(f"::ffff:{ip}"), ipaddress.IPv6Address(f"64:ff9b::{ip}")):
        assert address_refusal(form) == "", form


@given(public_v6)
def test_public_ipv6_addresses_pass(ip):
    assert address_refusal(ip) == ""


@given(refused_v4)
def test_an_allow_listed_network_opens_its_addresses_and_their_ipv6_forms_but_no_others(ip):
    allowed = AllowList((ipaddress.ip_network(f"{ip}/32"),))
    assert refusal(ip, allowed) == ""
    assert refusal(ipaddress.IPv6Address(f"::ffff:{ip}"), allowed) == ""
    other = ipaddress.IPv4Address((int(ip) + 1) % 2**32)
    if address_refusal(other):
        assert refusal(other, allowed)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd12:3456::1", "private (unique local)"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("ff02::1", "multicast"),
        ("239.1.1.1", "multicast"),
        ("::7f00:1", "loopback (127.0.0.1), inside an IPv6 address"),
        ("::ffff:127.0.0.1", "loopback (127.0.0.1), inside an IPv6 address"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata (169.254.169.254), inside an IPv6 address"),
        ("2002:a9fe:a9fe::", "cloud metadata (169.254.169.254), inside an IPv6 address"),
        ("64:ff9b:1::8.8.8.8", "reserved (local-use NAT64)"),
    ],
)
def test_each_refusal_says_what_the_address_is(address, why):
    assert address_refusal(ipaddress.ip_address(address)) == why


def test_a_metadata_address_inside_an_allowed_network_stays_refused_unless_listed_exactly():
    metadata = ipaddress.ip_address("169.254.169.254")
    assert refusal(metadata, AllowList.of(["169.254.0.0/16"])) == "cloud metadata"
    assert refusal(ipaddress.ip_address("169.254.1.1"), AllowList.of(["169.254.0.0/16"])) == ""
    assert refusal(metadata, AllowList.of(["169.254.169.254"])) == ""


def test_host_names_on_the_allow_list_match_exactly_or_by_their_dotted_suffix():
    allowed = AllowList.of(["hooks.example.com", ".internal.example"])
    assert allowed.has_name("HOOKS.example.com.") and allowed.has_name("a.b.internal.example")
    assert not allowed.has_name("evilhooks.example.com") and not allowed.has_name("internal.example.evil")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://files.example.com/", "must start with http:// or https://"),
        ("not a url", "must start with http:// or https://"),
        ("http://user:pw@hooks.example.com/", "must not carry credentials"),
        ("http://@hooks.example.com/", "must not carry credentials"),
        ("https:///nohost", "must name a host"),
        ("http://hooks.example.com:99999/", "invalid port"),
        ("http://127.0.0.1:8000/admin", "127.0.0.1 is loopback"),
        ("http://127.1/", "127.0.0.1 is loopback"),
        ("http://2130706433/", "127.0.0.1 is loopback"),
        ("http://0x7f.0.0.1/", "127.0.0.1 is loopback"),
        ("http://[::ffff:127.0.0.1]/", "inside an IPv6 address"),
        ("http://[::7f00:1]:8000/", "inside an IPv6 address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata service"),
        ("http://localhost:8000/", "'localhost', a non-public address"),
        ("http://admin.localhost/", "a non-public address"),
        (42, "must be a non-empty string"),
    ],
)
def test_urls_are_refused_by_what_they_spell_without_dns(url, message):
    with pytest.raises(Refused) as refused:
        check_static(url, NO_ONE)
    assert message in str(refused.value)


def test_public_and_allow_listed_urls_pass_the_static_check():
    assert check_static("https://hooks.example.com/budget", NO_ONE).port == 443
    assert check_static("http://8.8.8.8:8080/", NO_ONE).port == 8080
    loopback = AllowList.of(["127.0.0.0/8"], "GATEWAY_UPSTREAM_ALLOWED_NETWORKS")
    assert check_static("http://127.0.0.1:9/", loopback).host == "127.0.0.1"
    assert check_static("http://localhost:9/", loopback).host == "localhost"
    with pytest.raises(Refused, match="GATEWAY_UPSTREAM_ALLOWED_NETWORKS"):
        check_static("http://10.0.0.5/", loopback)
