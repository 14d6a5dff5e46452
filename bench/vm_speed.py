"""How fast this machine's CPU is right now: one fixed piece of the pipeline's kind of work, timed in
this thread's CPU time.

The 2-core VMs these benchmarks run on change speed by 20-40% within an hour with nothing else
running: the same code's CPU per delivery moves with it, and the guest reports no steal time (`vmstat`'s
``st`` stays 0), so nothing else in a result shows it. ``probe()`` times a fixed workload (decode and
encode a Chatwoot event with orjson, sign it twice with HMAC-SHA256, build a header list and a dict
per record: the worker's kind of work) in CPU time, the fastest of a few tries, with the machine
otherwise idle. ``make bench`` probes beside the bounds, before each scenario's drain, before its paced
run and after it, and before the peers: a figure that moved by a fifth between two probes came in a
slower (or faster) period of the machine, not from the code.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import orjson

from schemas.examples import example

RECORDS = 25  # per try: about 0.45 ms of CPU on the 2-core EPYC VM in its fast periods
TRIES = 41
_BODY = orjson.dumps(example("message_created", account_id=7, conversation_id=11))
_KEY = b"whsec_" + b"k" * 32


def _work(records: int) -> int:
    total = 0
    for i in range(records):
        event = orjson.loads(_BODY)
        event["id"] = i
        body = orjson.dumps(event)
        stamp = str(1_765_000_000 + i).encode()
        first = hmac.new(_KEY, stamp + b"." + body, hashlib.sha256).hexdigest()
        second = hmac.new(_KEY, b"msg_" + stamp + b"." + body, hashlib.sha256).digest()
        headers = [("content-type", b"application/json"), ("x-signature", first.encode()),
                   ("webhook-signature", second), ("webhook-id", str(i).encode())]
        record = {name: value for name, value in headers}
        total += len(body) + len(record)
    return total


def probe(records: int = RECORDS, tries: int = TRIES) -> float:
    """Milliseconds of this thread's CPU for the fixed work: the median of ``tries`` (lower is faster).

    CPU time, not wall time: a wait for a core does not count, a slower core does."""
    taken = []
    for _ in range(tries):
        started = time.thread_time()
        _work(records)
        taken.append(time.thread_time() - started)
    taken.sort()
    return round(taken[len(taken) // 2] * 1000, 3)
