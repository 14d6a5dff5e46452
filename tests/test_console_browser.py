"""The web console in a real browser (Debian's Chromium through Playwright) against a real
``akece-webhooks run`` process (api + router + delivery) on the real broker.

What a user sees: sign in, add a webhook with two events ticked, only matching deliveries in its
log with status 200; a failing receiver's attempts and dead letters, replayed from the page once
the receiver recovers, each arriving exactly once; another account's pages are 404; the secret is
gone once the creation screen is left; every change needs the CSRF token.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect
from playwright.async_api import Error as PlaywrightError

from schemas.examples import example
from services.publisher.publisher import Publisher
from tests.conftest import make_settings
from tests.console_support import ACCOUNT_TOKENS, ADMIN_TOKEN, Pipeline, Shots, browser, pipeline, reload_until, sign_in
from tests.receiver import Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOKEN = ACCOUNT_TOKENS[1]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 740}


@pytest.fixture(scope="module")
async def running(kafka_bootstrap: str) -> AsyncIterator[Pipeline]:
    async with pipeline(make_settings(kafka_bootstrap)) as running:
        yield running


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with browser() as launched:
        yield launched


@pytest.fixture
async def page(chromium: Browser) -> AsyncIterator[Page]:
    context = await chromium.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    page = await context.new_page()
    yield page
    await context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    return Shots(tmp_path_factory.mktemp("screenshots"))


async def publish(running: Pipeline, *events: dict[str, Any]) -> None:
    async with Publisher(running.settings, source="akece://test") as publisher:
        await publisher.publish_many(list(events))


async def rows(page: Page) -> list[str]:
    return [await r.inner_text() for r in await page.locator("table.log tbody tr").all()]


async def test_add_webhook_with_two_events_and_see_only_their_deliveries(
        running: Pipeline, page: Page, receiver: Receiver, shots: Shots) -> None:
    await page.goto(running.base + "/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await shots.take(page, "sign-in")
    await sign_in(page, running.base, TOKEN)
    await expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()

    await page.get_by_role("link", name="Add new webhook").click()
    await page.get_by_label("URL").fill("ftp://not-a-webhook")
    await page.get_by_label("Name").fill("CRM")
    await page.get_by_label("conversation_created", exact=True).check()
    await page.get_by_label("message_created", exact=True).check()
    await page.get_by_role("button", name="Create webhook").click()
    await expect(page.locator("#url-error")).to_have_text("Url is invalid")  # the API's message, beside the field
    await expect(page.get_by_label("message_created", exact=True)).to_be_checked()
    await shots.take(page, "add-webhook-error")

    await page.get_by_label("URL").fill(receiver.url("/crm"))
    await page.get_by_role("button", name="Create webhook").click()
    await expect(page.get_by_role("heading", name="Signing secret")).to_be_visible()
    secret = await page.locator("#secret").inner_text()
    assert re.fullmatch(r"whsec_\S+", secret), secret
    await expect(page.get_by_role("button", name="Copy secret")).to_be_visible()
    await shots.take(page, "secret-once")

    await page.get_by_role("link", name="Done").click()
    await expect(page.get_by_role("link", name=receiver.url("/crm"))).to_be_visible()
    assert secret not in await page.content()
    with pytest.raises(PlaywrightError, match="ERR_CACHE_MISS"):
        await page.go_back()  # the creation screen is not kept (no-store): history cannot show it again
    await page.wait_for_load_state()
    assert secret not in await page.inner_text("body")
    await page.goto(running.base + "/app/accounts/1/webhooks")
    catch_all = await running.api("POST", "/api/v1/accounts/1/webhooks",
                                  body={"url": receiver.url("/all"), "subscriptions": None})
    await page.reload()
    await expect(page.locator("table.webhooks tbody tr")).to_have_count(2)

    await publish(running, example("contact_created", account_id=1),
                  example("conversation_created", account_id=1, conversation_id=7),
                  example("message_updated", account_id=1, conversation_id=7),
                  example("message_created", account_id=1, conversation_id=7))
    assert len(catch_all["payload"]["webhook"]["subscriptions"]) == 8  # the defaults: all four events
    await receiver.wait_for(4, path="/all", timeout=30)  # every event was routed
    await receiver.wait_for(2, path="/crm", timeout=30)
    assert sorted(_event(r.body) for r in receiver.for_path("/crm")) == ["conversation_created", "message_created"]

    await page.get_by_role("link", name=receiver.url("/crm")).click()
    await expect(page.get_by_role("heading", name="Webhook CRM")).to_be_visible()
    assert secret not in await page.content()
    await shots.take(page, "webhook")
    await page.get_by_role("link", name="Delivery log").click()

    async def two_rows() -> bool:
        return len(await rows(page)) == 2
    await reload_until(page, two_rows)
    logged = await rows(page)
    assert sorted(r.split("\t")[1] for r in logged) == ["conversation_created", "message_created"]
    assert all(r.split("\t")[4] == "200" for r in logged), logged
    await shots.take(page, "delivery-log")
    await page.get_by_label("Event").select_option("message_created")
    await page.get_by_role("button", name="Apply").click()
    await expect(page.locator("table.log tbody tr")).to_have_count(1)

    await page.get_by_role("link", name="Webhooks").first.click()

    async def health_shown() -> bool:  # filled in by the page's script from health.json
        await expect(page.locator("[data-health]").first).not_to_have_text("…")
        return await page.locator('[data-health]:text-is("HTTP 200")').count() == 2
    await reload_until(page, health_shown)
    assert await page.locator('[data-health]:text-is("closed")').count() == 2
    await shots.take(page, "webhooks")
    await page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    await shots.take(page, "webhooks-360px")


def _event(body: bytes) -> str:
    match = re.search(rb'"event":\s*"(\w+)"', body)
    return match.group(1).decode() if match else ""


async def test_dead_letters_are_replayed_from_the_page_once_each(
        running: Pipeline, page: Page, receiver: Receiver, shots: Shots) -> None:
    receiver.set("/failing", status=500)
    created = await running.api("POST", "/api/v1/accounts/1/webhooks", TOKEN,
                                {"url": receiver.url("/failing"), "name": "Flaky",
                                 "subscriptions": ["message_created"]})
    webhook = created["payload"]["webhook"]["id"]
    await publish(running, example("message_created", account_id=1, conversation_id=11),
                  example("message_created", account_id=1, conversation_id=12))
    await receiver.wait_for(6, path="/failing", timeout=60)  # 1 + 2 retries each, then the DLQ

    await sign_in(page, running.base, TOKEN)
    hook = f"{running.base}/app/accounts/1/webhooks/{webhook}"
    await page.goto(hook + "/deliveries")

    async def six_failures() -> bool:
        logged = await rows(page)
        return len(logged) == 6 and all(r.split("\t")[4] == "500" for r in logged)
    await reload_until(page, six_failures)
    await page.locator("table.log tbody tr").first.get_by_text("Show").click()
    await shots.take(page, "delivery-log-failing")

    await page.goto(hook + "/dead_letters")

    async def two_dead() -> bool:
        return "Dead letters matching the filter: 2" in await page.inner_text("main")
    await reload_until(page, two_dead)
    await page.get_by_role("button", name="Count (dry run)").click()
    await expect(page.get_by_role("status")).to_contain_text("Dry run: 2 dead letters would be replayed")
    first = await page.locator("table.log tbody tr code.id").first.inner_text()
    await page.get_by_label(f"Select {first}").check()
    await page.get_by_label("Only the dead letters ticked in the list").check()
    await page.get_by_role("button", name="Count (dry run)").click()
    await expect(page.get_by_role("status")).to_contain_text("Dry run: 1 dead letters would be replayed")
    await expect(page.get_by_label(f"Select {first}")).to_be_checked()
    await shots.take(page, "dead-letters")

    receiver.set("/failing", status=200)
    await page.get_by_label("All 2 dead letters matching the filter").check()
    await page.get_by_label("Rate (records per second)").fill("0.5")
    await page.get_by_role("button", name="Replay", exact=True).click()
    await expect(page.get_by_role("heading", name=re.compile(r"^Replay rp_"))).to_be_visible()
    progress = page.url
    await page.goto(hook + "/dead_letters")  # the same replay again while it runs: refused, naming who runs it
    await page.get_by_role("button", name="Replay", exact=True).click()
    await expect(page.get_by_role("status")).to_contain_text("Replay refused")
    await expect(page.get_by_role("status")).to_contain_text("api:account:1")
    await page.goto(progress)
    await expect(page.get_by_role("status")).to_contain_text("Replay done", timeout=30000)
    await shots.take(page, "replay")

    await receiver.wait_for(8, path="/failing", timeout=30)
    ok = [r.headers["X-Chatwoot-Delivery"] for r in receiver.for_path("/failing") if r.answered == 200]
    failed = {r.headers["X-Chatwoot-Delivery"] for r in receiver.for_path("/failing") if r.answered == 500}
    assert Counter(ok) == Counter(failed), (ok, failed)  # each dead letter exactly once

    await page.goto(hook + "/dead_letters")  # the selection again: already replayed, refused, not resent
    await page.get_by_label(f"Select {first}").check()
    await page.get_by_label("Only the dead letters ticked in the list").check()
    await page.get_by_role("button", name="Replay", exact=True).click()
    await expect(page.get_by_role("status")).to_contain_text("already replayed")
    assert len(receiver.for_path("/failing")) == 8


async def test_another_accounts_pages_are_not_found(running: Pipeline, page: Page) -> None:
    created = await running.api("POST", "/api/v1/accounts/1/webhooks", TOKEN,
                                {"url": "http://127.0.0.1:9/private", "subscriptions": ["message_created"]})
    webhook = created["payload"]["webhook"]["id"]
    await sign_in(page, running.base, ACCOUNT_TOKENS[2])
    await expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    for path in ("/app/accounts/1/webhooks", f"/app/accounts/1/webhooks/{webhook}",
                 f"/app/accounts/1/webhooks/{webhook}/deliveries", f"/app/accounts/1/webhooks/{webhook}/dead_letters",
                 f"/app/accounts/2/webhooks/{webhook}", "/app/overview", "/app/no-such-page"):
        response = await page.goto(running.base + path)
        assert response is not None and response.status == 404, path
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        assert "127.0.0.1:9/private" not in await page.content()


async def test_session_cookie_csp_and_csrf(running: Pipeline, page: Page) -> None:
    response = await page.goto(running.base + "/app/sign-in")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    await sign_in(page, running.base, TOKEN)
    assert TOKEN not in page.url
    (cookie,) = await page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/app"
    assert await page.evaluate("document.cookie") == ""
    assert await page.evaluate("Object.keys(localStorage).length") == 0

    jar = {cookie["name"]: cookie["value"]}
    form = {"url": "http://127.0.0.1:9/csrf", "subscriptions": "message_created"}
    async with aiohttp.ClientSession(cookies=jar) as http, \
            http.post(running.base + "/app/accounts/1/webhooks", allow_redirects=False, data=form) as answer:
        assert answer.status == 403  # no CSRF token: refused
    hooks = await running.api("GET", "/api/v1/accounts/1/webhooks", TOKEN)
    assert all(w["url"] != "http://127.0.0.1:9/csrf" for w in hooks["payload"]["webhooks"])


async def test_keyboard_only_add_webhook(running: Pipeline, page: Page, receiver: Receiver) -> None:
    await page.goto(running.base + "/app/sign-in")
    await tab_to(page, "#token")
    await page.keyboard.type(TOKEN)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    await tab_to(page, "a.button.primary")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Add new webhook")).to_be_visible()
    await tab_to(page, "#url")
    await page.keyboard.type(receiver.url("/keyboard"))
    await tab_to(page, "#event-conversation_status_changed")
    await page.keyboard.press("Space")
    await tab_to(page, "button[type=submit].primary")
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Signing secret")).to_be_visible()
    hooks = await running.api("GET", "/api/v1/accounts/1/webhooks", TOKEN)
    mine = [w for w in hooks["payload"]["webhooks"] if w["url"] == receiver.url("/keyboard")]
    assert [w["subscriptions"] for w in mine] == [["conversation_status_changed"]]


async def tab_to(page: Page, selector: str, limit: int = 60) -> None:
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


async def test_admin_overview_and_every_webhook_editable(running: Pipeline, page: Page, shots: Shots) -> None:
    await running.api("POST", "/api/v1/accounts/2/webhooks", ACCOUNT_TOKENS[2],
                      {"url": "http://127.0.0.1:9/second-account", "name": "Second account hook"})
    await sign_in(page, running.base, ADMIN_TOKEN)
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    await expect(page.get_by_text("Consumer lag per group")).to_be_visible()
    await expect(page.get_by_text("Dead letters (growth)")).to_be_visible()
    await page.get_by_label("Search webhooks").fill("second-account")
    await page.get_by_role("button", name="Search").click()
    table = page.get_by_role("table", name=re.compile("Webhooks of every account"))
    await expect(table.locator("tbody tr")).to_have_count(1)
    await shots.take(page, "overview")
    await table.get_by_role("link", name="2", exact=True).first.click()
    await expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    await page.get_by_role("link", name="http://127.0.0.1:9/second-account").click()
    await page.get_by_label("Name").fill("Renamed hook")
    await page.get_by_label("contact_created", exact=True).uncheck()
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("heading", name="Webhook Renamed hook")).to_be_visible()
    await expect(page.get_by_label("contact_created", exact=True)).not_to_be_checked()
    await page.get_by_role("button", name="Rotate secret").click()
    await expect(page.get_by_role("heading", name="New signing secret")).to_be_visible()
    rotated = await page.locator("#secret").inner_text()
    await page.get_by_role("link", name="Configure this webhook").click()
    assert rotated not in await page.content()
    await page.get_by_role("button", name="Disable").click()
    await expect(page.get_by_text("disabled (disabled_by_api)")).to_be_visible()
    await page.get_by_role("link", name="Delete…").click()
    await shots.take(page, "delete-confirm")
    await page.get_by_role("button", name="Delete webhook").click()
    await expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    hooks = await running.api("GET", "/api/v1/accounts/2/webhooks")
    assert hooks["payload"]["webhooks"] == []
