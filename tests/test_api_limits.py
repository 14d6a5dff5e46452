"""Bounded resources per account in the API, against the real broker: the webhook cap, list pages,
capped time windows, absurd durations and the per-account scan limit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.admin.routes import SERVICE
from services.contract.topics import Topics
from services.ops.api import REPLAY_ROUTES
from services.shared.settings import Settings
from tests.test_admin_api import ADMIN, ONE, TWO, Api, running_api, with_tokens

HOOKS = "/api/v1/accounts/1/webhooks"


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    return with_tokens(kafka_bootstrap, api={"max_webhooks_per_account": 3, "max_scans_per_account": 1})


@pytest.fixture
async def api(settings: Settings, topics: Topics) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


async def test_an_account_has_at_most_the_cap_of_webhooks(api: Api) -> None:
    made = [await api.create(1, {"url": f"https://h{n}.example.com/"}) for n in range(3)]
    status, refused = await api.call("POST", HOOKS, {"url": "https://h3.example.com/"})
    assert status == 422
    assert refused == {"message": "Webhooks limit reached: an account may have at most 3 webhooks",
                       "attributes": ["base"]}
    await api.create(2, {"url": "https://h3.example.com/"}, token=TWO)  # another account: its own cap
    assert (await api.call("DELETE", f"{HOOKS}/{made[0]['id']}"))[0] == 200
    await api.create(1, {"url": "https://h3.example.com/"}, token=ONE)


async def test_list_pages_and_the_chatwoot_shape_up_to_the_cap(api: Api) -> None:
    made = [await api.create(1, {"url": f"https://h{n}.example.com/"}) for n in range(3)]
    ids = sorted(w["id"] for w in made)
    status, listing = await api.call("GET", HOOKS)
    assert status == 200 and list(listing) == ["payload"]
    assert [w["id"] for w in listing["payload"]["webhooks"]] == ids

    status, page = await api.call("GET", f"{HOOKS}?page=2&per_page=2")
    assert status == 200 and [w["id"] for w in page["payload"]["webhooks"]] == ids[2:]
    assert page["meta"] == {"page": 2, "per_page": 2, "total": 3}
    status, first = await api.call("GET", f"{HOOKS}?per_page=2")
    assert [w["id"] for w in first["payload"]["webhooks"]] == ids[:2] and first["meta"]["page"] == 1
    status, past = await api.call("GET", f"{HOOKS}?page=9")
    assert status == 200 and past["payload"]["webhooks"] == [] and past["meta"]["total"] == 3

    for query, name in (("page=0", "page"), ("page=x", "page"), ("per_page=4", "per_page"),
                        ("per_page=-1", "per_page"), ("page=99999999999999999999", "page")):
        status, bad = await api.call("GET", f"{HOOKS}?{query}")
        assert status == 400 and bad["message"].startswith(f"{name} must be a whole number"), (query, bad)

    api.client.app[SERVICE].max_webhooks = 2  # an account above the cap (created before it was lowered)
    status, capped = await api.call("GET", HOOKS)
    assert [w["id"] for w in capped["payload"]["webhooks"]] == ids[:2]
    status, rest = await api.call("GET", f"{HOOKS}?page=2&per_page=2")
    assert [w["id"] for w in rest["payload"]["webhooks"]] == ids[2:] and rest["meta"]["total"] == 3


async def test_windows_are_capped_and_absurd_durations_are_a_400(api: Api) -> None:
    hook = await api.create(1, {"url": "https://h.example.com/"})
    base = f"{HOOKS}/{hook['id']}"
    assert (await api.call("GET", f"{base}/dead_letters?since=7d"))[0] == 200
    assert (await api.call("GET", f"{base}/deliveries?since=6d"))[0] == 200
    calls = [("GET", f"{base}/dead_letters?since=8d", None), ("GET", f"{base}/deliveries?since=30d", None),
             ("GET", f"{base}/dead_letters?since=2020-01-01T00:00:00", None),
             ("POST", f"{base}/replay", {"since": "8d"}), ("POST", f"{base}/recover", {"since": "1000w"})]
    for method, path, body in calls:
        status, answer = await api.call(method, path, body)
        assert status == 400, (path, body, answer)
        assert answer["message"] == "since: the window may span at most 7d (AKECE_API_MAX_WINDOW_S)"
    for method, path, body in (("GET", f"{base}/dead_letters?since=99999999999999999999w", None),
                               ("GET", f"{base}/deliveries?since=99999999999999999999w", None),
                               ("POST", f"{base}/replay", {"since": "99999999999999999999w"}),
                               ("POST", f"{base}/recover", {"since": "1" * 400 + "d"})):
        status, answer = await api.call(method, path, body)
        assert status == 400, (path, answer)
        assert "since" in answer["message"]


async def test_scans_beyond_the_per_account_limit_are_a_429(api: Api) -> None:
    mine = await api.create(1, {"url": "https://h.example.com/"})
    theirs = await api.create(2, {"url": "https://h.example.com/"}, token=TWO)
    scans = api.client.app[REPLAY_ROUTES].scans
    async with scans.slot(1):  # one scan of account 1 running: the limit here
        for method, path in (("GET", "dead_letters?since=1h"), ("GET", "deliveries"), ("POST", "replay")):
            async with api.client.request(method, f"{HOOKS}/{mine['id']}/{path}",
                                          headers={"api_access_token": ONE}) as response:
                assert response.status == 429
                assert response.headers["Retry-After"] == "2"
                assert "at most 1 at once per account" in (await response.json())["error"]
        status, _ = await api.call("GET", f"/api/v1/accounts/2/webhooks/{theirs['id']}/dead_letters", token=TWO)
        assert status == 200  # another account is not held back
    assert (await api.call("GET", f"{HOOKS}/{mine['id']}/dead_letters", token=ADMIN))[0] == 200
    assert scans.running == {}
