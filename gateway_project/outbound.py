"""The one address policy for every URL the system calls that an operator or a client configured.

Agent upstreams, targets, budget webhooks and job webhooks are called from inside the
network the gateway runs in, so an unchecked URL lets whoever sets it make the gateway
reach internal services (an admin port on loopback, a database on 10.0.0.5, cloud
metadata at 169.254.169.254). Each such URL passes here when it is saved (a validation
error that says why) and again when it is used: webhooks are resolved once, every
address is checked, and the request goes to that checked address with the name in the
Host header and TLS SNI, so a name that resolves elsewhere a moment later (DNS
rebinding) is never followed; redirects are never followed either. Agent upstreams are
checked when saved (with DNS) and when the routing table loads (without DNS, so the
hot path does no lookups).

Refused: loopback, private (RFC 1918, ULA), link-local, cloud metadata, unspecified,
multicast, reserved, documentation and shared (CGNAT) addresses, and every IPv6 form
that embeds an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo), judged by the
IPv4 inside. An allow-list (``GATEWAY_UPSTREAM_ALLOWED_NETWORKS``,
``GATEWAY_WEBHOOK_ALLOWED_HOSTS``) of networks and host names lets an admin open what
an internal deployment needs; a metadata address passes only when listed exactly.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

import httpx
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from django.conf import settings
from django.core.exceptions import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_v4, _v6 = ipaddress.IPv4Network, ipaddress.IPv6Network

# Instance metadata services: refused even inside an allowed network unless listed exactly.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server (a public-looking address)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS DNS over IPv6
    )
)
METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"})

# (network, why) in the order they are judged; the first that holds names the refusal.
REFUSED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_v4("0.0.0.0/8"), "unspecified"),
    (_v4("127.0.0.0/8"), "loopback"),
    (_v4("10.0.0.0/8"), "private"),
    (_v4("172.16.0.0/12"), "private"),
    (_v4("192.168.0.0/16"), "private"),
    (_v4("169.254.0.0/16"), "link-local"),
    (_v4("100.64.0.0/10"), "shared (CGNAT)"),
    (_v4("192.0.0.0/24"), "reserved"),
    (_v4("192.0.2.0/24"), "reserved (documentation)"),
    (_v4("198.51.100.0/24"), "reserved (documentation)"),
    (_v4("203.0.113.0/24"), "reserved (documentation)"),
    (_v4("192.88.99.0/24"), "reserved"),
    (_v4("198.18.0.0/15"), "reserved (benchmarking)"),
    (_v4("224.0.0.0/4"), "multicast"),
    (_v4("240.0.0.0/4"), "reserved"),
)
REFUSED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_v6("::/128"), "unspecified"),
    (_v6("::1/128"), "loopback"),
    (_v6("fc00::/7"), "private (unique local)"),
    (_v6("fe80::/10"), "link-local"),
    (_v6("fec0::/10"), "reserved (site-local)"),
    (_v6("ff00::/8"), "multicast"),
    (_v6("64:ff9b:1::/48"), "reserved (local-use NAT64)"),
    (_v6("100::/64"), "reserved (discard)"),
    (_v6("2001:db8::/32"), "reserved (documentation)"),
)
# IPv6 ranges whose last 32 bits are an IPv4 address.
TAIL_EMBEDDINGS = (_v6("::ffff:0:0/96"), _v6("::/96"), _v6("::ffff:0:0:0/96"), _v6("64:ff9b::/96"))


class Refused(ValueError):
    """The URL is not one the gateway will call; the message says why."""


class Unresolvable(Refused):
    """The URL's host name does not resolve (now): nothing can be checked, so nothing is called."""


@dataclass(frozen=True, slots=True)
class AllowList:
    """Networks and host names (``.example.com``: its subdomains) an admin opened to outbound calls."""

    networks: tuple[Network, ...] = ()
    names: tuple[str, ...] = ()
    setting: str = ""

    @classmethod
    def of(cls, entries: Iterable[str], setting: str = "") -> AllowList:
        return _parse(tuple(entries), setting)

    def has_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == name or (name.startswith(".") and host.endswith(name)) for name in self.names)

    def has_host(self, host: str) -> bool:
        """``host`` is a listed name, or an address literal inside a listed network."""
        ip = _literal(host)
        return self.has_name(host) or (ip is not None and self.has_address(ip))

    def has_address(self, ip: IPAddress) -> bool:
        if ip in METADATA_ADDRESSES:
            return any(net.num_addresses == 1 and ip in net for net in self.networks)
        candidates = (ip, embedded_ipv4(ip)) if ip.version == 6 else (ip,)
        return any(c is not None and c.version == net.version and c in net for c in candidates for net in self.networks)


@lru_cache(maxsize=32)
def _parse(entries: tuple[str, ...], setting: str) -> AllowList:
    networks, names = [], []
    for entry in entries:
        entry = entry.strip().lower().strip("[]").rstrip(".")
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if entry:
                names.append(entry)
    return AllowList(tuple(networks), tuple(names), setting)


def upstream_allow_list() -> AllowList:
    return AllowList.of(settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS, "GATEWAY_UPSTREAM_ALLOWED_NETWORKS")


def webhook_allow_list() -> AllowList:
    return AllowList.of(settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS, "GATEWAY_WEBHOOK_ALLOWED_HOSTS")


# --- addresses ---------------------------------------------------------------------


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, translated, NAT64, 6to4, Teredo client)."""
    if ip.teredo:
        return ip.teredo[1]
    if ip.sixtofour:
        return ip.sixtofour
    for net in TAIL_EMBEDDINGS:
        if ip in net and ip not in REFUSED_V6[0][0] and ip not in REFUSED_V6[1][0]:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> str:
    """Why ``ip`` may not be called ("loopback", "cloud metadata", ...), or "" when it is a public address."""
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if ip.version == 6:
        if ip.teredo:
            server, client = ip.teredo
            why = address_refusal(client) or address_refusal(server)
            return f"{why}, inside an IPv6 (Teredo) address" if why else ""
        inner = embedded_ipv4(ip)
        if inner is not None:
            why = address_refusal(inner)
            return f"{why} ({inner}), inside an IPv6 address" if why else ""
        table = REFUSED_V6
    else:
        table = REFUSED_V4
    for net, why in table:
        if ip in net:
            return why
    if ip.is_multicast:
        return "multicast"
    if not ip.is_global or ip.is_reserved:
        return "reserved"
    return ""


def refusal(ip: IPAddress, allowed: AllowList) -> str:
    """``address_refusal`` unless the allow-list opens ``ip``."""
    why = address_refusal(ip)
    return "" if not why or allowed.has_address(ip) else why


def _literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form a resolver would take without DNS (``127.1``, ``0x7f000001``)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


# --- URLs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked URL and, once resolved, the addresses it may be called at."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...] = ()


def parse(url: object, what: str = "The URL") -> Destination:
    """The URL's parts if it is an http(s) URL with a host and no credentials; else ``Refused``."""
    if not isinstance(url, str) or not url.strip():
        raise Refused(f"{what} must be a non-empty string.")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise Refused(f"{what} must start with http:// or https://.")
    if "@" in parts.netloc:
        raise Refused(f"{what} must not carry credentials (user:password@).")
    if not parts.hostname:
        raise Refused(f"{what} must name a host.")
    try:
        port = parts.port
    except ValueError:
        raise Refused(f"{what} has an invalid port.") from None
    scheme = parts.scheme.lower()
    return Destination(url, scheme, parts.hostname.lower().rstrip("."), port or (443 if scheme == "https" else 80))


def _hint(allowed: AllowList) -> str:
    return f" (an admin may allow it in {allowed.setting})" if allowed.setting else ""


def check_static(url: object, allowed: AllowList, what: str = "The URL") -> Destination:
    """Everything that can be judged without DNS: the URL's shape, an address literal, names known to be local."""
    dest = parse(url, what)
    if allowed.has_name(dest.host):
        return dest
    ip = _literal(dest.host)
    if ip is not None:
        why = refusal(ip, allowed)
        if why:
            raise Refused(f"{what} names a non-public address: {ip} is {why}{_hint(allowed)}.")
    elif dest.host in METADATA_NAMES:
        raise Refused(f"{what} names the cloud metadata service '{dest.host}'{_hint(allowed)}.")
    elif dest.host == "localhost" or dest.host.endswith(".localhost"):
        why = refusal(ipaddress.ip_address("127.0.0.1"), allowed)
        if why:
            raise Refused(f"{what} names '{dest.host}', a non-public address ({why}){_hint(allowed)}.")
    return dest


def _judge(dest: Destination, infos, allowed: AllowList, what: str) -> Destination:
    """Every address passes, or ``Refused``; an allow-listed name is trusted except with a metadata address."""
    addresses = tuple(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise Unresolvable(f"{what} names host '{dest.host}', which does not resolve.")
    trusted_name = allowed.has_name(dest.host)
    for address in addresses:
        ip = _literal(address)
        why = "" if trusted_name and ip not in METADATA_ADDRESSES else refusal(ip, allowed)
        if why:
            raise Refused(
                f"{what} names host '{dest.host}', which resolves to a non-public address: {ip} is {why}"
                f"{_hint(allowed)}."
            )
    return Destination(dest.url, dest.scheme, dest.host, dest.port, addresses)


def _unresolvable(dest: Destination, what: str) -> Unresolvable:
    return Unresolvable(f"{what} names host '{dest.host}', which does not resolve.")


def resolve(url: object, allowed: AllowList, what: str = "The URL") -> Destination:
    """``check_static`` plus every address the name resolves to, checked; the result carries them."""
    dest = check_static(url, allowed, what)
    literal = _literal(dest.host)
    if literal is not None:
        return Destination(dest.url, dest.scheme, dest.host, dest.port, (str(literal),))
    try:
        infos = socket.getaddrinfo(dest.host, dest.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise _unresolvable(dest, what) from None
    return _judge(dest, infos, allowed, what)


async def aresolve(url: object, allowed: AllowList, what: str = "The URL") -> Destination:
    """``resolve`` without blocking the event loop."""
    dest = check_static(url, allowed, what)
    literal = _literal(dest.host)
    if literal is not None:
        return Destination(dest.url, dest.scheme, dest.host, dest.port, (str(literal),))
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(dest.host, dest.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise _unresolvable(dest, what) from None
    return _judge(dest, infos, allowed, what)


def check_saved(url: object, allowed: AllowList, what: str) -> str:
    """At save time: the URL if it and every address its host resolves to pass (an allow-listed name needs no DNS)."""
    if allowed.has_name(parse(url, what).host):
        return check_static(url, allowed, what).url
    return resolve(url, allowed, what).url


# --- agent upstreams ---------------------------------------------------------------


def check_upstream(url: object, what: str = "The upstream URL") -> str:
    return check_saved(url, upstream_allow_list(), what)


def upstream_refusal(url: str, what: str = "The URL") -> str:
    """When the routing table loads (no DNS): why a stored upstream URL is no longer called, or ""."""
    try:
        check_static(url, upstream_allow_list(), what)
    except Refused as refused:
        return str(refused)
    return ""


def validate_upstream_url(value: str) -> None:
    """Model-field validator of agent and target URLs (forms and the API both run it)."""
    try:
        check_upstream(value)
    except Refused as refused:
        raise ValidationError(str(refused), code="outbound_refused") from None


# --- webhooks ----------------------------------------------------------------------


def check_webhook(url: object, what: str = "The webhook URL") -> str:
    return check_saved(url, webhook_allow_list(), what)


def validate_webhook_url(value: str) -> None:
    """Model-field validator of webhook URLs."""
    if not value:
        return
    try:
        check_webhook(value)
    except Refused as refused:
        raise ValidationError(str(refused), code="outbound_refused") from None


# --- identity providers' key sets ---------------------------------------------------


def check_jwks(url: object, what: str = "The JWKS URL") -> str:
    """A key set is trusted for every token it verifies: HTTPS, or plain HTTP only to a loopback address (an identity
    provider on the same host); the upstream address policy applies as for agents."""
    dest = parse(url, what)
    literal = _literal(dest.host)
    loopback = dest.host == "localhost" or (literal is not None and literal.is_loopback)
    if dest.scheme != "https" and not loopback:
        raise Refused(f"{what} must use https:// (plain http:// only to a loopback address).")
    return check_saved(url, upstream_allow_list(), what)


def validate_jwks_url(value: str) -> None:
    try:
        check_jwks(value)
    except Refused as refused:
        raise ValidationError(str(refused), code="outbound_refused") from None


# --- guardrail hooks -----------------------------------------------------------------


def check_hook(url: object, what: str = "The hook URL") -> str:
    """A guardrail hook is sent the text of requests and answers: HTTPS, or plain HTTP to loopback (a service on
    the same host, allowed as such); any other address must pass the webhook address policy."""
    dest = parse(url, what)
    literal = _literal(dest.host)
    loopback = dest.host == "localhost" or (literal is not None and literal.is_loopback)
    if loopback:
        return dest.url
    if dest.scheme != "https":
        raise Refused(f"{what} must use https:// (plain http:// only to a loopback address).")
    return check_saved(url, webhook_allow_list(), what)


def hook_allow_list() -> AllowList:
    """Where a guardrail hook may connect when called: loopback, and what the webhook policy allows."""
    return AllowList.of([*settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS, "127.0.0.0/8", "::1", "localhost"],
                        "GATEWAY_WEBHOOK_ALLOWED_HOSTS")  # fmt: skip


def validate_hook_url(value: str) -> None:
    try:
        check_hook(value)
    except Refused as refused:
        raise ValidationError(str(refused), code="outbound_refused") from None


class TooLarge(Exception):
    """The answer was longer than the caller reads."""


async def aget(url: str, allowed: AllowList, *, timeout: float, max_bytes: int, what: str = "The URL") -> bytes:
    """At use time: resolve once, check every address, GET from a checked one, redirects not followed; the body,
    at most ``max_bytes`` of it (``TooLarge`` past that). ``Refused``, or ``httpx.HTTPError`` for a failed call or an
    answer other than 200."""
    return await arequest("GET", url, allowed, timeout=timeout, max_bytes=max_bytes, what=what)


async def arequest(
    method: str, url: str, allowed: AllowList, *, timeout: float, max_bytes: int, what: str = "The URL",
    content: bytes | None = None, headers: dict[str, str] | None = None,
) -> bytes:  # fmt: skip
    """``aget`` for any method, with a body and headers."""
    dest = await aresolve(url, allowed, what)
    host_header = urlsplit(dest.url).netloc
    extensions = {"sni_hostname": dest.host} if dest.scheme == "https" and _literal(dest.host) is None else {}
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout) as client:
        failure: httpx.ConnectError | None = None
        for address in dest.addresses:
            # identity: a compressed answer would be inflated whole before its size could be checked.
            request = client.build_request(method, _pinned(dest, address), content=content,
                                           headers={"accept-encoding": "identity", **(headers or {}),
                                                    "Host": host_header})  # fmt: skip
            request.extensions.update(extensions)
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                failure = exc
                continue
            try:
                if response.status_code != 200:
                    raise httpx.HTTPStatusError(f"{what} answered {response.status_code}", request=request,
                                                response=response)  # fmt: skip
                if response.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
                    raise TooLarge(f"{what} answered compressed, which the gateway did not ask for")
                body = bytearray()
                async for chunk in response.aiter_raw():  # as sent: an encoding the gateway did not ask for is not read
                    body += chunk
                    if len(body) > max_bytes:
                        raise TooLarge(f"{what} answered more than {max_bytes} bytes")
                return bytes(body)
            finally:
                await response.aclose()
        raise failure


def _pinned(dest: Destination, address: str) -> str:
    """``dest.url`` with its host replaced by ``address``: the connection goes there and nowhere else."""
    parts = urlsplit(dest.url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((dest.scheme, netloc, parts.path or "/", parts.query, ""))


def post(url: str, *, content: bytes, headers: dict[str, str], timeout: float) -> httpx.Response:
    """At connect time: resolve once, check every address, POST to a checked one; redirects are not followed.

    Raises ``Refused`` when the URL or an address does not pass (``Unresolvable`` when the name does
    not resolve now) and ``httpx.HTTPError`` when no address could be reached. The answer's body is
    never read: only its status matters, and a receiver cannot make the gateway hold a large one.
    """
    dest = resolve(url, webhook_allow_list(), "The webhook URL")
    host_header = urlsplit(dest.url).netloc
    extensions = {"sni_hostname": dest.host} if dest.scheme == "https" and _literal(dest.host) is None else {}
    # trust_env off: a proxy from the environment would connect by name again, past the check.
    with httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout) as client:
        failure: httpx.ConnectError | None = None
        for address in dest.addresses:
            request = client.build_request(
                "POST", _pinned(dest, address), content=content, headers={**headers, "Host": host_header}
            )
            request.extensions.update(extensions)
            try:
                response = client.send(request, stream=True)
            except httpx.ConnectError as exc:  # the next checked address, if the name has more
                failure = exc
                continue
            response.close()
            return response
        raise failure


def address_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells without DNS, or None for a name."""
    return _literal(host)


class CheckedResolver(AbstractResolver):
    """The resolver of the hot path's upstream connections: every address a name resolves to when a connection is
    opened passes the policy, or is dropped (all dropped: the connection fails, naming why).

    URLs are checked when saved and when the routing table loads, but a name may
    resolve elsewhere by the time it is called (DNS rebinding, a hijacked zone): this
    is the check of the address actually connected to. Address literals never reach a
    resolver; they were checked as written.
    """

    def __init__(self, allowed: Callable[[], AllowList] = upstream_allow_list, inner: AbstractResolver | None = None):
        self._allowed = allowed
        self._inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        found = await self._inner.resolve(host, port, family)
        allowed = self._allowed()
        trusted_name = allowed.has_name(host)
        kept, refused = [], []
        for result in found:
            ip = _literal(result["host"])
            why = "" if trusted_name and ip not in METADATA_ADDRESSES else refusal(ip, allowed)
            (refused if why else kept).append(f"{ip} is {why}" if why else result)
        if not kept:
            raise OSError(f"'{host}' resolves only to addresses the gateway may not call: {'; '.join(refused)}")
        return kept

    async def close(self) -> None:
        await self._inner.close()
