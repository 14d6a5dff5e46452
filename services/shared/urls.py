"""The one webhook URL rule, used by the API when a URL is stored and by the sender before each POST.

The sender builds its requests from yarl's parse of a URL; so does this rule. A URL passes if the
sender can build a request from it: yarl parses it, the scheme is http or https, the host (after
IDNA) is a DNS name or a canonical IP literal, and credentials in it can be sent as Basic auth
(no ``:`` in the user, Latin-1 only). Whitespace and control characters are refused outright.

    parse(url) -> URL        raises InvalidUrlError(reason); the reason never repeats the URL
    normalized(url) -> str   the form compared for duplicates: scheme and host in lower case, the
                             host in IDNA (punycode), the default port dropped
    redact(text, url) -> str ``text`` without ``url``, its parts, or any other URL (for error messages)

A URL stored before this rule that fails it is refused by the sender as ``invalid_url``: a
permanent failure (dead-lettered at once, never retried).
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from aiohttp import BasicAuth
from yarl import URL

MAX_LENGTH = 2048
SCHEMES = frozenset({"http", "https"})

# A host after IDNA: DNS labels (underscores tolerated, as resolvers do), or an IPv6 literal.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?\.?")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")
_NUMERIC = re.compile(r"[0-9.]+")


class InvalidUrlError(ValueError):
    """A URL the sender could not send to. The message says why without repeating the URL."""


def _check_text(url: object) -> str:
    if not isinstance(url, str) or not url:
        raise InvalidUrlError("empty or not text")
    if len(url) > MAX_LENGTH:
        raise InvalidUrlError(f"longer than {MAX_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidUrlError("contains whitespace or a control character")
    return url


def _check_host(host: str | None) -> None:
    if not host:
        raise InvalidUrlError("no host")
    if ":" in host:
        if _IPV6.fullmatch(host) is None:
            raise InvalidUrlError("malformed IPv6 host")
        return
    if _NUMERIC.fullmatch(host) is not None:
        try:  # strict: four decimal parts, no leading zeros (127.1, 2130706433, 0177... are refused)
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidUrlError("not a canonical IPv4 address") from None
        return
    if _NAME.fullmatch(host) is None or ".." in host:
        raise InvalidUrlError("malformed host name")


def _check_credentials(target: URL) -> None:
    if target.raw_user is None and target.raw_password is None:
        return
    if ":" in (target.user or ""):
        raise InvalidUrlError("':' in the user name of the credentials")
    auth = BasicAuth.from_url(target)
    try:
        if auth is not None:
            auth.encode()
    except UnicodeError:
        raise InvalidUrlError("credentials are not Latin-1") from None


@lru_cache(maxsize=16384)
def parse(url: str) -> URL:
    """The URL the sender posts to; raises ``InvalidUrlError`` if it could not send to it."""
    text = _check_text(url)
    try:
        target = URL(text)
        scheme = target.scheme
        host = target.raw_host
        _ = target.port
    except Exception:  # ValueError mostly; yarl 1.25 raises IndexError for "http://[]@"
        raise InvalidUrlError("not a URL the HTTP client can parse") from None
    if scheme not in SCHEMES:
        raise InvalidUrlError("scheme is not http or https")
    _check_host(host)
    _check_credentials(target)
    return target


def error(url: object) -> str | None:
    """Why ``url`` is refused, or ``None`` if it passes."""
    try:
        parse(_check_text(url))
    except InvalidUrlError as exc:
        return str(exc)
    return None


def host(url: str) -> str:
    """The host of a URL that passed ``parse`` (IDNA, lower case, IPv6 without brackets)."""
    return parse(url).raw_host or ""


def normalized(url: str) -> str:
    """The form two URLs are compared in: ``HTTP://Hooks.Example.com:80/a`` and ``http://hooks.example.com/a``
    are the same webhook. yarl lower-cases scheme and host, encodes the host in IDNA and drops a default port;
    the fragment (never sent) is dropped; path, query and credentials stay as given."""
    target = parse(url).with_fragment(None)
    return str(target.with_path(target.raw_path, keep_query=True, encoded=True))  # "https://h" is "https://h/"


_ANY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")
_SEPARATORS = re.compile(r"[/?#&=@:;\\\[\]]+")
REDACTED = "<redacted>"
MIN_PART = 4  # shorter parts of a URL ("/", "a", "80") are not secrets and would mangle the text


def redact(text: str, url: str = "") -> str:
    """``text`` with any URL, and every part of ``url`` (credentials, host, path and query segments) of at
    least ``MIN_PART`` characters, replaced by ``<redacted>``: exception texts repeat what they parsed."""
    if url:
        text = text.replace(url, REDACTED)
        rest = url.split("://", 1)[-1]
        for part in sorted({p for p in _SEPARATORS.split(rest) if len(p) >= MIN_PART}, key=len, reverse=True):
            text = text.replace(part, REDACTED)
    return _ANY_URL.sub(REDACTED, text)
