"""The demo receiver: prints each webhook, verifies both signatures, and fails on purpose on one path."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from aiohttp import web

OK_PATH = "/hooks/crm"
FAILING_PATH = "/hooks/broken"


def verify_standard(secret: str, msg_id: str, timestamp: str, body: bytes, signatures: str) -> bool:
    """Standard Webhooks: ``v1,<base64 HMAC-SHA256(key, id.timestamp.body)>``, any of several."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest())
    return any(hmac.compare_digest(expected, sig.partition(",")[2].encode()) for sig in signatures.split())


def verify_chatwoot(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Chatwoot: ``sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={digest}", signature)


class DemoReceiver:
    def __init__(self, header_prefix: str = "X-Chatwoot") -> None:
        self.secrets: dict[str, str] = {}
        self.prefix = header_prefix
        self.received = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(OK_PATH, self.accept)
        app.router.add_post(FAILING_PATH, self.fail)
        return app

    def _verdict(self, request: web.Request, body: bytes) -> str:
        secret = self.secrets.get(request.path)
        if secret is None:
            return "no secret known"
        h = request.headers
        standard = verify_standard(secret, h.get("webhook-id", ""), h.get("webhook-timestamp", ""), body,
                                   h.get("webhook-signature", ""))
        chatwoot = verify_chatwoot(secret, h.get(f"{self.prefix}-Timestamp", ""), body,
                                   h.get(f"{self.prefix}-Signature", ""))
        return f"standard-webhooks {'ok' if standard else 'BAD'}, chatwoot {'ok' if chatwoot else 'BAD'}"

    def _print(self, request: web.Request, body: bytes, status: int) -> None:
        self.received += 1
        event = body.split(b'"event":"', 1)[-1].split(b'"', 1)[0].decode(errors="replace")[:40]
        stamp = time.strftime("%H:%M:%S")
        print(f"[receiver {stamp}] {status} {request.path:14} {event:28} "
              f"delivery={request.headers.get('webhook-id', '?')[:8]} signatures: {self._verdict(request, body)}",
              flush=True)

    async def accept(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._print(request, body, 200)
        return web.json_response({"ok": True})

    async def fail(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._print(request, body, 500)
        return web.json_response({"error": "this demo endpoint always fails"}, status=500)
