"""The one URL rule (``services.shared.urls``), Retry-After parsing and error texts: unit and property tests,
and the API refusing what the sender could not send (real broker for the subscription store)."""

from __future__ import annotations

import errno
import ipaddress

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from services.admin.validation import url_error
from services.delivery.http import describe
from services.delivery.http_wire import request_head
from services.delivery.policy import parse_retry_after
from services.shared import kafka, urls
from services.shared.errors import TransportError
from tests.test_admin_api import HOOKS, running_api, with_tokens

NOW = 1_780_000_000.0

# Accepted by the API before this rule; yarl (hence the sender) cannot use them.
POISON = [
    "http://a\\@hooks.example.com/",
    "https://hooks.example.com\\@x/",
    "http://ex\u00adample.com/",
    "http://[::1]x@hooks.example.com/",
    "http://a%3Ab:pw@hooks.example.com/",  # a ':' in the user: aiohttp refuses the Basic auth
    "http://%E2%9C%93:pw@hooks.example.com/",  # credentials beyond Latin-1
    "http://127.1/",  # not a canonical IPv4 address: aiohttp refuses it at connect time
    "http://2130706433/",
    "http://hooks..example.com/",
    "http://[]@",  # yarl raises IndexError (found by the property test below)
]
GOOD = [
    "https://example.com",
    "HTTP://user:pass@example.com:8443/p?q=1#f",
    "https://bücher.example/",
    "http://[2606:4700::1111]/x",
    "https://hooks.example.com/a%20b?token=x&y=%2F",
    "http://93.184.215.14:8080/",
]


@pytest.mark.parametrize("url", POISON)
def test_urls_the_sender_cannot_use_are_refused(url: str) -> None:
    with pytest.raises(urls.InvalidUrlError):
        urls.parse(url)
    assert url_error(url) == "Url is invalid"


@pytest.mark.parametrize("url", GOOD)
def test_urls_the_sender_can_use_pass(url: str) -> None:
    assert urls.error(url) is None and url_error(url) is None
    assert urls.normalized(urls.normalized(url)) == urls.normalized(url)


def test_reasons_never_repeat_the_url() -> None:
    secret = "http://SECRETUSER:pw@ex\u00adample.com/SECRETPATH?token=SECRETQUERY"
    reason = urls.error(secret)
    assert reason and "SECRET" not in reason


@pytest.mark.parametrize(("a", "b"), [
    ("HTTPS://Hooks.Example.COM/x", "https://hooks.example.com/x"),
    ("https://hooks.example.com:443/x", "https://hooks.example.com/x"),
    ("http://hooks.example.com:80/x", "http://hooks.example.com/x"),
    ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
    ("https://BÜCHER.example/x", "https://bücher.example/x"),
    ("https://hooks.example.com/x#frag", "https://hooks.example.com/x"),
    ("https://hooks.example.com", "https://hooks.example.com/"),
])
def test_normalized_compares_scheme_host_idna_and_default_port(a: str, b: str) -> None:
    assert urls.normalized(a) == urls.normalized(b)


@pytest.mark.parametrize(("a", "b"), [
    ("https://hooks.example.com/x", "http://hooks.example.com/x"),
    ("https://hooks.example.com:8443/x", "https://hooks.example.com/x"),
    ("https://hooks.example.com/X", "https://hooks.example.com/x"),  # paths are case sensitive
    ("https://hooks.example.com/x?a=1", "https://hooks.example.com/x?a=2"),
])
def test_normalized_keeps_what_receivers_tell_apart(a: str, b: str) -> None:
    assert urls.normalized(a) != urls.normalized(b)


def test_redact_removes_the_url_and_its_parts() -> None:
    url = "http://user:SECRETPW@127.0.0.1:28433/hook/SECRETPATH?token=SECRETQUERY"
    for text in (f"Can not write request body for {url}", "path /hook/SECRETPATH and token=SECRETQUERY",
                 "see https://other.example.com/SECRETOTHER"):
        assert "SECRET" not in urls.redact(text, url), text
    assert urls.redact("ValueError: bad port", url) == "ValueError: bad port"


URLISH = st.text(alphabet=st.sampled_from(list("htps:/\\@[]%.:?#&=-_aAxX019 \u00ad\u00e9\u2713\u0663\t")), max_size=40)


def _client_builds(target: URL) -> None:
    """What the sender's client does with a URL before connecting: build the request line, the Host header
    and the Basic auth of the URL's credentials (Latin-1), and connect to a canonical IPv4 literal."""
    head = request_head(target).decode("latin-1")
    line, host_line = head.split("\r\n")[:2]
    assert line.startswith("POST /") and line.endswith(" HTTP/1.1") and " " not in line[5:-9]
    assert host_line.startswith("Host: ") and len(host_line) > 6
    assert (target.raw_user is not None) == ("\r\nAuthorization: Basic " in head)
    host = target.raw_host or ""
    if ":" not in host and host.replace(".", "").isdigit():
        assert str(ipaddress.IPv4Address(host)) == host


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(URLISH.map(lambda s: "http://" + s), URLISH.map(lambda s: "https://h.example.com/" + s),
                 st.text(max_size=60)))
def test_the_rule_never_raises_and_what_it_accepts_the_client_can_send(text: str) -> None:
    try:
        target = urls.parse(text)
    except urls.InvalidUrlError:
        return
    _client_builds(target)
    urls.normalized(text)


# --- Retry-After ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["²", "1e3", " 5 ", "5 ", "-1", "+5", "٣", "\uff15", "1.5", "0x10", "1_000",
                                   "9" * 11, "9" * 5000, "Sun, 06 Nov 1994 08:49:37 GMT junk",
                                   "Sun, 06 Nov 1994 99:49:37 GMT", "Sun, 31 Feb 1994 08:49:37 GMT",
                                   "Sun, 06 Nov 1994 08:49:37 UTC", "06 Nov 1994", "\x00", "5\n"])
def test_retry_after_refuses_anything_but_digits_or_an_http_date(value: str) -> None:
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0.0), ("120", 120.0), ("9999999999", 9999999999.0),
    ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0), ("Sunday, 06-Nov-94 08:49:37 GMT", 0.0),
    ("Sun Nov  6 08:49:37 1994", 0.0),
])
def test_retry_after_accepts_digits_and_the_three_date_formats(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=80), st.from_regex(r"[A-Za-z]{3}, [0-9]{2} [A-Za-z]{3} [0-9]{4} "
                                                      r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT", fullmatch=True)))
def test_retry_after_never_raises(value: str) -> None:
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or seconds >= 0
    if seconds is not None and not value.isascii():
        pytest.fail(f"non-ASCII Retry-After accepted: {value!r}")


# --- error texts ------------------------------------------------------------------------------------------
def test_transport_errors_name_type_errno_and_host_only() -> None:
    url = "http://u:SECRETPW@127.0.0.1:28433/hook/SECRETPATH?token=SECRETQUERY"
    write = aiohttp.ClientOSError(errno.EPIPE, f"Can not write request body for {url}")
    assert describe(write, "127.0.0.1") == "ClientOSError, errno 32 (EPIPE), host 127.0.0.1"
    connector = aiohttp.ClientConnectorError(aiohttp.client_reqrep.ConnectionKey(
        "127.0.0.1", 28433, False, True, None, None, None, None), ConnectionRefusedError(errno.ECONNREFUSED, url))
    assert describe(connector, "127.0.0.1") == "ClientConnectorError, errno 111 (ECONNREFUSED), host 127.0.0.1"
    assert describe(TimeoutError(), "h.example.com") == "TimeoutError, host h.example.com"
    assert describe(TransportError("dns", "cannot resolve h.example.com: x"), "h") == "cannot resolve h.example.com: x"


# --- the API ----------------------------------------------------------------------------------------------
async def test_api_refuses_urls_the_sender_cannot_use_and_compares_normalized(kafka_bootstrap: str) -> None:
    settings = with_tokens(kafka_bootstrap)
    await kafka.ensure_topics(settings)
    async with running_api(settings) as api:
        invalid = {"message": "Url is invalid", "attributes": ["url"]}
        for url in POISON:
            assert await api.call("POST", HOOKS, {"url": url}) == (422, invalid), url
        created = await api.create(1, {"url": "https://hooks.example.com/in"})
        for url in POISON[:4]:
            assert await api.call("PATCH", f"{HOOKS}/{created['id']}", {"url": url}) == (422, invalid), url
        taken = {"message": "Url has already been taken", "attributes": ["url"]}
        for same in ("HTTPS://Hooks.EXAMPLE.com/in", "https://hooks.example.com:443/in",
                     "https://hooks.example.com/in#x"):
            assert await api.call("POST", HOOKS, {"url": same}) == (422, taken), same
        await api.create(1, {"url": "https://hooks.example.com/IN"})  # another path is another webhook
