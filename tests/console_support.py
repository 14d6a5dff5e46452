"""The web console's browser tests: a real pipeline process, Debian's Chromium, page helpers.

``pipeline(settings)`` runs ``akece-webhooks run`` (api + router + delivery) as a process on the
real broker; ``browser()`` launches ``/usr/bin/chromium`` headless through Playwright (installed by
``make tools``: ``deploy/install-tools.sh``). Screenshots go to ``AKECE_CONSOLE_SCREENSHOTS`` when
set (``docs/screenshots`` to refresh the README's), else to the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from services.devtools.ports import free_port
from services.shared import kafka
from services.shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("AKECE_CHROMIUM", "/usr/bin/chromium")
ADMIN_TOKEN = "console-admin-token"
ACCOUNT_TOKENS = {1: "console-account-1-token", 2: "console-account-2-token"}


@dataclass
class Pipeline:
    base: str
    settings: Settings
    process: asyncio.subprocess.Process

    async def api(self, method: str, path: str, token: str = ADMIN_TOKEN, body: Any = None) -> Any:
        async with aiohttp.ClientSession(headers={"api_access_token": token}) as http, \
                http.request(method, self.base + path, json=body) as response:
            response.raise_for_status()
            return await response.json()


def pipeline_env(settings: Settings, api_port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AKECE_")}
    env.update({
        "AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "AKECE_TOPIC_PREFIX": settings.topic_prefix,
        "AKECE_KAFKA_PARTITIONS": str(settings.kafka.partitions),
        "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8",
        "AKECE_RETRY_SCHEDULE": "1,1",
        "AKECE_RETRY_JITTER": "0",
        "AKECE_API_HOST": "127.0.0.1",
        "AKECE_API_PORT": str(api_port),
        "AKECE_METRICS_HOST": "127.0.0.1",
        "AKECE_METRICS_PORT": "0",
        "AKECE_API_ADMIN_TOKEN": ADMIN_TOKEN,
        "AKECE_API_ACCOUNT_TOKENS": ",".join(f"{a}:{t}" for a, t in ACCOUNT_TOKENS.items()),
        "AKECE_LOG_LEVEL": "warning",
        "AKECE_LOG_FORMAT": "json",
    })
    return env


@asynccontextmanager
async def pipeline(settings: Settings) -> AsyncIterator[Pipeline]:
    """``akece-webhooks run`` on its own topics; ready when ``/readyz`` says so; SIGTERM at the end."""
    await kafka.ensure_topics(settings)
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "run", cwd=ROOT, env=pipeline_env(settings, port),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        await _ready(base, process)
        yield Pipeline(base, settings, process)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _ready(base: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                assert process.stderr is not None
                raise AssertionError(f"the pipeline exited: {(await process.stderr.read()).decode()[-2000:]}")
            try:
                async with http.get(base + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the pipeline was not ready within 60 s")


@asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: run `make tools` (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            await launched.close()


async def sign_in(page: Page, base: str, token: str) -> None:
    await page.goto(base + "/")
    await page.get_by_label("API access token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()


async def reload_until(page: Page, done: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Reload the page until ``done()`` (a bounded wait on what the page shows)."""
    deadline = time.monotonic() + timeout
    while not await done():
        assert time.monotonic() < deadline, f"the page never showed it: {page.url}\n{await page.inner_text('main')}"
        await asyncio.sleep(0.5)
        await page.reload()


class Shots:
    """Screenshots of each page: to ``AKECE_CONSOLE_SCREENSHOTS`` when set, else a temporary folder."""

    def __init__(self, fallback: Path) -> None:
        self.folder = Path(os.environ.get("AKECE_CONSOLE_SCREENSHOTS") or fallback)
        self.folder.mkdir(parents=True, exist_ok=True)

    async def take(self, page: Page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path
