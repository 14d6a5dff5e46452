"""The private-network guard: which destination addresses a webhook may not reach.

A webhook URL is chosen by a customer, and the pipeline sends requests from inside our network, so
a URL pointing at loopback, a private range or a cloud metadata endpoint would let a customer probe
or attack internal services (SSRF). The API refuses such URLs when a webhook is written; the
delivery workers check again at connect time, because DNS answers change.

``classify(ip)`` is the pure rule (a stable reason string, or ``None`` for a public address).
``NetworkGuard`` adds the operator's allowlist (``AKECE_ALLOWED_PRIVATE_CIDRS``) and DNS:

    guard = NetworkGuard(settings.allowed_private_cidrs)
    guard.blocked_reason("10.0.0.7")          # "private"
    await guard.check_host("hooks.example")   # raises BlockedDestinationError if every address is blocked
    await guard.resolve("hooks.example", 443) # the allowed addresses, to connect to exactly those

Embedded IPv4 forms are judged by the IPv4 address they reach: IPv4-mapped (``::ffff:10.0.0.1``),
NAT64 (``64:ff9b::/96``) and 6to4 (``2002::/16``). Teredo and other tunnels are refused outright.
Cloud metadata endpoints stay blocked when an allowed range covers them (``100.64.0.0/10`` does not
open Alibaba's ``100.100.100.200``, ``fd00::/8`` does not open AWS's ``fd00:ec2::254``); only the
address itself, allowed as a single address (``/32``, ``/128``), opens one.
Reasons (bounded, usable as metric labels): unspecified, loopback, private, shared_address_space,
link_local, cloud_metadata, multicast, reserved, unique_local, site_local, invalid.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

from services.shared.errors import BlockedDestinationError, TransportError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Awaitable[list[str]]]


def _nets(reason: str, *cidrs: str) -> list[tuple[IPNetwork, str]]:
    return [(ipaddress.ip_network(cidr), reason) for cidr in cidrs]


# Checked in order: the first matching range names the reason.
_V4_RULES = [
    # AWS (IMDS, ECS task metadata, DNS, time), GCP, Azure (IMDS is 169.254.169.254, wireserver),
    # Alibaba, Oracle.
    *_nets("cloud_metadata", "169.254.169.254/32", "169.254.169.253/32", "169.254.169.123/32",
           "169.254.170.2/32", "169.254.170.23/32", "168.63.129.16/32", "100.100.100.200/32",
           "192.0.0.192/32"),
    *_nets("unspecified", "0.0.0.0/8"),  # 0.0.0.0 reaches the local host on Linux
    *_nets("loopback", "127.0.0.0/8"),
    *_nets("private", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
    *_nets("shared_address_space", "100.64.0.0/10"),
    *_nets("link_local", "169.254.0.0/16"),
    *_nets("multicast", "224.0.0.0/4"),
    *_nets("reserved", "240.0.0.0/4", "192.0.0.0/24", "192.0.2.0/24", "198.51.100.0/24",
           "203.0.113.0/24", "198.18.0.0/15", "192.88.99.0/24"),
]
_V6_RULES = [
    # AWS's instance services (IMDS fd00:ec2::254, DNS ::253, time ::123, ECS ::23), GCP's metadata server.
    *_nets("cloud_metadata", "fd00:ec2::/32", "fd20:ce::254/128"),
    *_nets("unspecified", "::/128"),
    *_nets("loopback", "::1/128"),
    *_nets("private", "64:ff9b:1::/48"),
    *_nets("unique_local", "fc00::/7"),
    *_nets("link_local", "fe80::/10"),
    *_nets("site_local", "fec0::/10"),
    *_nets("multicast", "ff00::/8"),
    # IETF assignments (Teredo, ORCHID, benchmarking), documentation, discard, SRv6 SIDs.
    *_nets("reserved", "2001::/23", "2001:db8::/32", "3fff::/20", "100::/64", "5f00::/16"),
]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address actually reaches: mapped, NAT64 or 6to4."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def classify(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be reached (a stable reason), or ``None`` if it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip if ip.scope_id is None else ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        embedded = _embedded_v4(ip)
        if embedded is not None:
            return classify(embedded)
        rules = _V6_RULES
    else:
        rules = _V4_RULES
    for network, reason in rules:
        if ip in network:
            return reason
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _GLOBAL_UNICAST:
        return "reserved"
    return None


def parse_ip(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None


def is_blocked(ip: IPAddress, allowed: Iterable[IPNetwork]) -> bool:
    """True when ``ip`` is in a blocked range and no allowed network contains it."""
    return _reason(ip, list(allowed)) is not None


def _reason(ip: IPAddress, allowed: list[IPNetwork]) -> str | None:
    reason = classify(ip)
    if reason is None:
        return None
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_v4(ip)) is not None:
        candidates.append(embedded)
    if reason == "cloud_metadata":  # a range never opens a metadata endpoint: only its own address does
        allowed = [net for net in allowed if net.num_addresses == 1]
    if any(c.version == net.version and c in net for c in candidates for net in allowed):
        return None
    return reason


async def system_resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to, through the system resolver."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TransportError("dns", f"cannot resolve {host}: {exc.strerror}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class NetworkGuard:
    """The guard with the operator's allowlist and a resolver (injectable for tests)."""

    def __init__(self, allowed_cidrs: Iterable[str], *, resolver: Resolver | None = None,
                 resolve_timeout_s: float = 5.0) -> None:
        self.allowed: list[IPNetwork] = [ipaddress.ip_network(c, strict=False) for c in allowed_cidrs]
        self._resolver = resolver or system_resolve
        self._timeout = resolve_timeout_s

    def blocked_reason(self, ip: str | IPAddress) -> str | None:
        """Why connecting to ``ip`` is refused, or ``None`` when it is allowed."""
        address = parse_ip(ip) if isinstance(ip, str) else ip
        if address is None:
            return "invalid"
        return _reason(address, self.allowed)

    async def resolve(self, host: str) -> list[str]:
        """The allowed addresses of ``host`` (an IP literal or a name).

        Raises ``BlockedDestinationError`` when every address is blocked, ``TransportError("dns")``
        when the name does not resolve (in time).
        """
        literal = parse_ip(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await asyncio.wait_for(self._resolver(host), self._timeout)
            except TimeoutError as exc:
                raise TransportError("dns", f"resolving {host} timed out") from exc
        allowed = [a for a in addresses if self.blocked_reason(a) is None]
        if not allowed:
            reasons = sorted({self.blocked_reason(a) or "" for a in addresses} - {""}) or ["no_address"]
            raise BlockedDestinationError(f"{host} resolves only to blocked addresses ({', '.join(reasons)})")
        return allowed

    async def check_host(self, host: str) -> None:
        """Raise ``BlockedDestinationError`` when every address of ``host`` is blocked."""
        await self.resolve(host)
