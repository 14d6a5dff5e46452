"""Web console benchmark: first paint of the Webhooks page with 100 webhooks, and the page's bytes.

    python -m bench.bench_console [--webhooks 100] [--loads 20]

Runs ``akece-webhooks run --role api`` as a process on fresh topics of
``AKECE_KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092; deleted afterwards), creates the
webhooks of one account through the API, signs in with Debian's Chromium (Playwright, headless)
and loads ``/app/accounts/1/webhooks`` ``--loads`` times. Reports, per load, the browser's
``first-contentful-paint`` and the HTML's time (request start to response end), the first load
apart from the rest (warm; the stylesheet and script were first fetched by the sign-in page).
Target: first paint under 200 ms. The page's live columns (circuit, last delivery) are filled
afterwards from ``health.json``, whose time is reported too. Writes ``bench/results/console-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from playwright.async_api import Page, async_playwright

from bench.fixtures import delete_topics
from services.devtools.ports import free_port
from services.shared import kafka
from services.shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-console-token"
CHROMIUM = os.environ.get("AKECE_CHROMIUM", "/usr/bin/chromium")
TIMING = """() => new Promise((resolve) => {
  const done = (fcp) => {
    const nav = performance.getEntriesByType("navigation")[0];
    resolve({fcp_ms: fcp, html_ms: nav.responseEnd - nav.requestStart, html_bytes: nav.transferSize,
             dom_ms: nav.domContentLoadedEventEnd});
  };
  new PerformanceObserver((list) => {
    const paint = list.getEntriesByName("first-contentful-paint")[0];
    if (paint) done(paint.startTime);
  }).observe({type: "paint", buffered: true});
  setTimeout(() => done(null), 5000);
})"""


def api_process(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKECE_")}
    env.update({"AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "AKECE_TOPIC_PREFIX": settings.topic_prefix, "AKECE_API_HOST": "127.0.0.1",
                "AKECE_API_PORT": str(port), "AKECE_METRICS_PORT": "0", "AKECE_METRICS_HOST": "127.0.0.1",
                "AKECE_API_ACCOUNT_TOKENS": f"1:{TOKEN}", "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8",
                "AKECE_LOG_LEVEL": "warning"})
    return subprocess.Popen([sys.executable, "-m", "services", "run", "--role", "api"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL)


async def ready(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(base + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("the API was not ready within 60 s")


async def create_webhooks(base: str, count: int) -> None:
    async with aiohttp.ClientSession(headers={"api_access_token": TOKEN}) as http:
        for i in range(count):
            body = {"url": f"http://127.0.0.1:9/hooks/{i}", "name": f"Webhook {i}",
                    "subscriptions": ["conversation_created", "message_created"]}
            async with http.post(base + "/api/v1/accounts/1/webhooks", json=body) as response:
                response.raise_for_status()


async def measure(page: Page, url: str) -> dict[str, Any]:
    health = asyncio.get_running_loop().create_future()
    started = time.perf_counter()

    def on_response(response: Any) -> None:
        if response.url.endswith("/health.json") and not health.done():
            health.set_result((time.perf_counter() - started) * 1000)
    page.on("response", on_response)
    await page.goto(url, wait_until="load")
    timing: dict[str, Any] = await page.evaluate(TIMING)
    timing["health_ms"] = round(await asyncio.wait_for(health, 30), 1)
    page.remove_listener("response", on_response)
    return timing


async def run(webhooks: int, loads: int) -> dict[str, Any]:
    bootstrap = os.environ.get("AKECE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    settings = Settings(topic_prefix=f"benchconsole{uuid.uuid4().hex[:8]}",
                        kafka={"bootstrap_servers": bootstrap, "partitions": 3})
    await kafka.ensure_topics(settings)
    port = free_port()
    process = api_process(settings, port)
    base = f"http://127.0.0.1:{port}"
    try:
        await ready(base)
        await create_webhooks(base, webhooks)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                       args=["--no-sandbox", "--disable-gpu"])
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(base + "/app/sign-in")
            await page.get_by_label("API access token").fill(TOKEN)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url("**/webhooks")
            url = base + "/app/accounts/1/webhooks"
            samples = [await measure(page, url) for _ in range(loads)]
            assert await page.locator("table.webhooks tbody tr").count() == webhooks
            async with aiohttp.ClientSession() as http:
                css = len(await (await http.get(base + "/app/static/console.css")).read())
                js = len(await (await http.get(base + "/app/static/console.js")).read())
            await browser.close()
    finally:
        process.terminate()
        process.wait(30)
        await delete_topics(settings)
    warm = samples[1:] or samples
    html_bytes = samples[-1]["html_bytes"]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.machine()} "
        f"{os.cpu_count()} cpus, {platform.python_implementation()} {platform.python_version()}",
        "webhooks": webhooks, "loads": loads,
        "first": {k: round(v, 1) for k, v in samples[0].items() if isinstance(v, int | float)},
        "warm_median": {k: round(statistics.median(s[k] for s in warm), 1) for k in ("fcp_ms", "html_ms", "health_ms")},
        "warm_max": {k: round(max(s[k] for s in warm), 1) for k in ("fcp_ms", "html_ms", "health_ms")},
        "bytes": {"html_transfer": html_bytes, "css": css, "js": js},
    }


def markdown(result: dict[str, Any]) -> str:
    cold, median, worst, size = result["first"], result["warm_median"], result["warm_max"], result["bytes"]
    return "\n".join([
        f"# Web console: Webhooks page with {result['webhooks']} webhooks ({result['date']}, {result['machine']})",
        "",
        "| load | first contentful paint | HTML request to response end | health.json answered |",
        "|---|---|---|---|",
        f"| first (after sign-in) | {cold['fcp_ms']} ms | {cold['html_ms']} ms | {cold['health_ms']} ms |",
        f"| warm median of {result['loads'] - 1} | {median['fcp_ms']} ms | {median['html_ms']} ms | "
        f"{median['health_ms']} ms |",
        f"| warm max | {worst['fcp_ms']} ms | {worst['html_ms']} ms | {worst['health_ms']} ms |",
        "",
        f"Bytes: HTML {size['html_transfer']} transferred (headers included), console.css {size['css']}, "
        f"console.js {size['js']}; no other resource.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--webhooks", type=int, default=100)
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args()
    result = asyncio.run(run(args.webhooks, args.loads))
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"console-{datetime.now(UTC).date().isoformat()}"
    stem.with_suffix(".json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    text = markdown(result)
    stem.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
