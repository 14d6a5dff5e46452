"""Verify Chatwoot-compatible signatures (``X-Chatwoot-Signature``), standard library only.

Usage: WEBHOOK_SECRET=whsec_... python chatwoot_receiver.py
Env: WEBHOOK_SECRET (required: the whole secret string, ``whsec_`` included), HOST (127.0.0.1),
PORT (8000; 0 picks a free one).

``X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, "<X-Chatwoot-Timestamp>.<raw body>")>``.
Compare in constant time, refuse a timestamp more than 5 minutes off, and deduplicate on
``X-Chatwoot-Delivery`` (the same id on every retry). Only the current secret signs this header:
during a secret rotation, switch the receiver to the new secret at once, or verify the Standard
Webhooks headers instead (they carry both signatures while the old secret overlaps).
"""

import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET = os.environ["WEBHOOK_SECRET"].encode()
TOLERANCE_S = 5 * 60
SEEN: set[str] = set()  # keep these in your database in production (a unique key), for a few days
LOCK = threading.Lock()


def verify(body: bytes, timestamp: str | None, signature: str | None) -> str | None:
    """None when the request is authentic, else why not."""
    if not timestamp or not signature:
        return "missing X-Chatwoot-Timestamp or X-Chatwoot-Signature"
    try:
        if abs(time.time() - int(timestamp)) > TOLERANCE_S:
            return "timestamp outside the 5 minute tolerance"
    except ValueError:
        return "invalid X-Chatwoot-Timestamp"
    expected = "sha256=" + hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, signature) else "signature mismatch"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        problem = verify(body, self.headers.get("X-Chatwoot-Timestamp"), self.headers.get("X-Chatwoot-Signature"))
        if problem:
            return self.answer(401, {"error": problem})
        delivery = self.headers.get("X-Chatwoot-Delivery", "")
        with LOCK:
            duplicate = delivery in SEEN
            SEEN.add(delivery)
        if not duplicate:
            event = json.loads(body)
            print(f"processed {event.get('event')} {event.get('id')}", flush=True)
        self.answer(200, {"status": "duplicate" if duplicate else "processed"})

    def answer(self, status: int, payload: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet access log
        pass


if __name__ == "__main__":
    host = os.environ.get("HOST", "127.0.0.1")
    server = ThreadingHTTPServer((host, int(os.environ.get("PORT", "8000"))), Handler)
    print(f"listening on http://{host}:{server.server_port}", flush=True)
    server.serve_forever()
