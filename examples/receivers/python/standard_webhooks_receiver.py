"""A minimal idempotent webhook receiver: Standard Webhooks verification and deduplication on ``webhook-id``.

Usage: WEBHOOK_SECRET=whsec_... python standard_webhooks_receiver.py      (pip install standardwebhooks)
Env: WEBHOOK_SECRET (required, as shown once by the API), HOST (127.0.0.1), PORT (8000; 0 picks a free
one), DEDUP_DB (webhooks.sqlite3).

- Verify first, over the raw bytes, before parsing: ``Webhook.verify`` checks the ``v1`` HMAC of
  ``<webhook-id>.<webhook-timestamp>.<body>`` against every signature in ``webhook-signature`` (during a
  secret rotation there are two) and refuses a timestamp more than 5 minutes off (replayed requests).
- A refused request gets 401 and is never recorded: the sender retries it, then dead-letters it.
- ``webhook-id`` is the same on every retry and replay of one delivery: the id is recorded in the same
  transaction as the work, so a redelivery is answered 200 without doing the work twice, even after
  a restart, and a failure in the work leaves nothing recorded (the retry redoes it).
"""

import json
import os
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = os.environ["WEBHOOK_SECRET"]
DB = sqlite3.connect(os.environ.get("DEDUP_DB", "webhooks.sqlite3"), check_same_thread=False)
DB.execute("CREATE TABLE IF NOT EXISTS deliveries (webhook_id TEXT PRIMARY KEY, event TEXT, received_at REAL)")
LOCK = threading.Lock()


def process(event: dict[str, Any]) -> None:
    """Your work. Raise to answer 500: the delivery is retried and its id not recorded."""
    print(f"processed {event.get('event')} {event.get('id')}", flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            event = Webhook(SECRET).verify(body, dict(self.headers))  # raw bytes, all headers
        except WebhookVerificationError as exc:
            return self.answer(401, {"error": str(exc)})
        with LOCK, DB:  # one transaction: the id is recorded only if the work succeeded
            inserted = DB.execute("INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?)",
                                  (self.headers["webhook-id"], event.get("event"), time.time())).rowcount
            if inserted:
                process(event)
        self.answer(200, {"status": "processed" if inserted else "duplicate"})

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
