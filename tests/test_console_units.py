"""The web console's pure parts: CSRF tokens, the API's 422 mapped to fields, escaping, and the
dead-letter selection the console replays by (``DlqFilter.deliveries``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from services.console import html
from services.console.session import CSRF_FIELD, Session, csrf_ok, csrf_token
from services.console.webhooks import _errors
from services.contract.dead_letters import DlqFilter
from services.shared.auth import Principal


def _request(origin: str | None) -> Any:
    headers = {"Origin": origin} if origin else {}
    return SimpleNamespace(headers=headers, scheme="http", host="console.test")


def test_csrf_token_is_bound_to_the_session_token_and_the_origin() -> None:
    session = Session("token-a", Principal(1))
    assert session.csrf == csrf_token("token-a") != csrf_token("token-b")
    assert "token-a" not in session.csrf
    assert csrf_ok(session, {CSRF_FIELD: session.csrf}, _request("http://console.test"))
    assert csrf_ok(session, {CSRF_FIELD: session.csrf}, _request(None))
    assert not csrf_ok(session, {CSRF_FIELD: csrf_token("token-b")}, _request("http://console.test"))
    assert not csrf_ok(session, {}, _request("http://console.test"))
    assert not csrf_ok(session, {CSRF_FIELD: session.csrf}, _request("https://evil.test"))
    assert not csrf_ok(session, {CSRF_FIELD: session.csrf}, _request("null"))


def test_the_apis_validation_message_goes_beside_its_field() -> None:
    assert _errors("Url is invalid, Subscriptions Invalid events", ["url", "subscriptions"]) == {
        "url": "Url is invalid", "subscriptions": "Subscriptions Invalid events"}
    assert _errors("Url has already been taken", ["url"]) == {"url": "Url has already been taken"}
    assert _errors("Name is too long (maximum is 255 characters)", ["name"]) == {
        "name": "Name is too long (maximum is 255 characters)"}
    assert _errors("Account already has 100 webhooks", ["base"]) == {"_": "Account already has 100 webhooks"}


def test_values_are_escaped_and_times_readable() -> None:
    cell = html.esc('<script>alert("x")</script>')
    assert "<script>" not in html.table("t", ("a",), [[cell]])
    assert html.when(1765000000) == '<time datetime="2025-12-06T05:46:40+00:00">2025-12-06 05:46:40Z</time>'
    assert html.when("2025-12-06T05:46:40.123Z").endswith(">2025-12-06 05:46:40Z</time>")
    assert html.when(None) == "-"


def _dead(delivery_id: str) -> Any:
    return SimpleNamespace(account_id="1", webhook_id=7, event_type="message_created", reason="exhausted",
                           delivery_id=delivery_id)


def test_a_selection_of_dead_letters_by_delivery_id() -> None:
    everything = DlqFilter.of(account=1, webhook=7)
    assert "deliveries" not in everything.to_json()  # a run's identity without a selection is unchanged
    chosen = DlqFilter.of(account=1, webhook=7, delivery="d2,d1")
    assert chosen.to_json()["deliveries"] == ["d1", "d2"]
    assert DlqFilter.from_json(chosen.to_json()) == chosen
    assert chosen.matches(_dead("d1")) and not chosen.matches(_dead("d3"))
    assert everything.matches(_dead("d3"))


def test_unicode_digits_in_ids_and_pages_are_refused_not_a_crash() -> None:
    from aiohttp.test_utils import make_mocked_request

    from services.console.core import _ids_ok
    from services.console.logs import _int

    session = Session("t" * 20, Principal(1))
    for value in ("²", "\u0661", "12²"):  # str.isdigit() takes them; int() refuses "²", reads "\u0661" as 1
        for name in ("account_id", "id"):
            request = make_mocked_request("GET", "/", match_info={"account_id": "1", "id": "7", name: value})
            assert _ids_ok(request, session) is False, (name, value)
        assert _int(value, 1) == 1
    assert _ids_ok(make_mocked_request("GET", "/", match_info={"account_id": "1", "id": "7"}), session)
    assert _int("3", 1) == 3
