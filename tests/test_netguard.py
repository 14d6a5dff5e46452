"""The private-network guard: every blocked range, embedded IPv4 forms, the allowlist, DNS answers."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from services.delivery.http import HttpSender
from services.shared.errors import BlockedDestinationError, TransportError
from services.shared.netguard import NetworkGuard, classify, is_blocked
from services.shared.settings import HttpSettings
from tests.receiver import Receiver

BLOCKED = [
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("::", "unspecified"),
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.254", "private"),
    ("192.168.1.1", "private"), ("64:ff9b:1::a", "private"),
    ("100.64.0.1", "shared_address_space"), ("100.127.255.254", "shared_address_space"),
    ("169.254.1.1", "link_local"), ("fe80::1", "link_local"), ("fe80::1%eth0", "link_local"),
    ("169.254.169.254", "cloud_metadata"), ("fd00:ec2::254", "cloud_metadata"),
    ("169.254.170.2", "cloud_metadata"), ("100.100.100.200", "cloud_metadata"),
    ("168.63.129.16", "cloud_metadata"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"), ("192.0.2.10", "reserved"),
    ("198.18.0.1", "reserved"), ("2001:db8::1", "reserved"), ("100::1", "reserved"),
    ("fc00::1", "unique_local"), ("fd12:3456::1", "unique_local"), ("fec0::1", "site_local"),
    # embedded IPv4: judged by the address actually reached
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "cloud_metadata"), ("::ffff:0.0.0.0", "unspecified"),
    ("64:ff9b::a00:1", "private"), ("64:ff9b::7f00:1", "loopback"),
    ("2002:a00:1::1", "private"), ("2002:7f00:1::", "loopback"), ("2002:a9fe:a9fe::1", "cloud_metadata"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved"),  # Teredo
    ("::10.0.0.1", "reserved"),  # deprecated IPv4-compatible
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "172.32.0.1", "172.15.255.255", "100.128.0.1",
          "11.0.0.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e", "::ffff:8.8.8.8",
          "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_blocked_ranges_name_their_reason(address: str, reason: str) -> None:
    assert NetworkGuard([]).blocked_reason(address) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert NetworkGuard([]).blocked_reason(address) is None
    assert classify(ipaddress.ip_address(address)) is None


def test_invalid_address_is_blocked() -> None:
    assert NetworkGuard([]).blocked_reason("not-an-ip") == "invalid"
    assert NetworkGuard([]).blocked_reason("[::1]") == "loopback"


def test_allowlist_exempts_only_its_ranges() -> None:
    guard = NetworkGuard(["127.0.0.0/8", "10.20.0.0/16"])
    assert guard.blocked_reason("127.0.0.1") is None
    assert guard.blocked_reason("::ffff:127.0.0.1") is None  # the mapped form reaches the same address
    assert guard.blocked_reason("10.20.1.1") is None
    assert guard.blocked_reason("10.21.1.1") == "private"
    assert guard.blocked_reason("::1") == "loopback"  # 127.0.0.0/8 says nothing about IPv6 loopback
    assert guard.blocked_reason("169.254.169.254") == "cloud_metadata"


@pytest.mark.parametrize(("allowed", "metadata"), [
    ("100.64.0.0/10", "100.100.100.200"), ("169.254.0.0/16", "169.254.169.254"),
    ("169.254.0.0/16", "169.254.170.2"), ("168.63.0.0/16", "168.63.129.16"), ("0.0.0.0/0", "169.254.169.254"),
    ("fd00::/8", "fd00:ec2::254"), ("fd00::/8", "fd00:ec2::23"), ("fc00::/7", "fd00:ec2::254"),
    ("fc00::/7", "fd20:ce::254"), ("169.254.0.0/16", "::ffff:169.254.169.254"),
])
def test_an_allowed_range_never_opens_a_metadata_endpoint(allowed: str, metadata: str) -> None:
    guard = NetworkGuard([allowed])
    assert guard.blocked_reason(metadata) == "cloud_metadata"
    assert is_blocked(ipaddress.ip_address(metadata), guard.allowed)
    bare = metadata.removeprefix("::ffff:")
    single = f"{bare}/{32 if ipaddress.ip_address(bare).version == 4 else 128}"
    assert NetworkGuard([allowed, single]).blocked_reason(metadata) is None  # listed as a single address


async def test_a_name_resolving_to_a_metadata_endpoint_stays_blocked_under_an_allowed_range() -> None:
    guard = fake_dns({"meta.test": ["100.100.100.200"], "peer.test": ["100.64.1.2"]})
    guard.allowed = NetworkGuard(["100.64.0.0/10"]).allowed
    assert await guard.resolve("peer.test") == ["100.64.1.2"]  # the range itself is open
    with pytest.raises(BlockedDestinationError, match="cloud_metadata"):
        await guard.resolve("meta.test")


def test_is_blocked_takes_networks() -> None:
    allowed = [ipaddress.ip_network("192.168.0.0/16")]
    assert not is_blocked(ipaddress.ip_address("192.168.3.4"), allowed)
    assert is_blocked(ipaddress.ip_address("10.0.0.1"), allowed)
    assert not is_blocked(ipaddress.ip_address("8.8.8.8"), [])


def fake_dns(answers: dict[str, list[str]]) -> NetworkGuard:
    async def resolve(host: str) -> list[str]:
        if host not in answers:
            raise TransportError("dns", f"cannot resolve {host}")
        return answers[host]

    return NetworkGuard([], resolver=resolve)


async def test_check_host_refuses_names_resolving_only_to_blocked_addresses() -> None:
    guard = fake_dns({"internal.test": ["10.0.0.7", "fd00::7"], "mixed.test": ["10.0.0.7", "8.8.8.8"],
                      "public.test": ["8.8.4.4"], "empty.test": []})
    with pytest.raises(BlockedDestinationError, match="private"):
        await guard.check_host("internal.test")
    with pytest.raises(BlockedDestinationError):
        await guard.check_host("empty.test")
    await guard.check_host("mixed.test")
    assert await guard.resolve("mixed.test") == ["8.8.8.8"]
    assert await guard.resolve("public.test") == ["8.8.4.4"]
    with pytest.raises(BlockedDestinationError, match="cloud_metadata"):
        await guard.check_host("169.254.169.254")  # IP literals are checked without DNS
    with pytest.raises(TransportError):
        await guard.check_host("nowhere.test")


async def test_check_host_bounds_slow_dns() -> None:
    async def never(_: str) -> list[str]:
        await asyncio.Event().wait()
        return []

    with pytest.raises(TransportError, match="timed out"):
        await NetworkGuard([], resolver=never, resolve_timeout_s=0.05).check_host("slow.test")


async def test_system_resolver_sees_localhost_as_loopback() -> None:
    with pytest.raises(BlockedDestinationError, match="loopback"):
        await NetworkGuard([]).check_host("localhost")
    assert "127.0.0.1" in await NetworkGuard(["127.0.0.0/8", "::1/128"]).resolve("localhost")
    with pytest.raises(TransportError):
        await NetworkGuard([]).check_host("no-such-host.invalid")


async def _static(host: str) -> list[str]:
    return {"mixed.test": ["10.0.0.1", "127.0.0.1"], "meta.test": ["169.254.169.254", "10.1.2.3"]}[host]


async def test_the_sender_connects_only_to_the_allowed_addresses_of_a_name(receiver: Receiver) -> None:
    """``mixed.test`` resolves to a private address and to 127.0.0.1 (allowed here): the POST goes to
    127.0.0.1, named ``mixed.test``; ``meta.test`` resolves only to blocked addresses: nothing is sent."""
    guard = NetworkGuard(["127.0.0.0/8"], resolver=_static)
    async with HttpSender(HttpSettings(), guard) as sender:
        sent = await sender.post(f"http://mixed.test:{receiver.port}/hook", b"{}", {"webhook-id": "d-1"})
        blocked = await sender.post(f"http://meta.test:{receiver.port}/hook", b"{}", {"webhook-id": "d-2"})
    assert (sent.status, sent.error_class) == (200, None)
    assert [r.headers["Host"] for r in receiver.requests] == [f"mixed.test:{receiver.port}"]
    assert (blocked.error_class, blocked.error_message) == (
        "blocked_destination", "meta.test resolves only to blocked addresses (cloud_metadata, private)")
