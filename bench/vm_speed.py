"""How fast this machine's CPU is right now: one fixed piece of the pipeline's kind of work, timed in
this thread's CPU time.

The 2-core VM these benchmarks run on changes speed by up to 2x from one second to the next with
nothing else running, each vCPU on its own (docs/performance.md, eleventh session): the same code's CPU
per delivery moves with it, and the guest reports no steal time (`vmstat`'s ``st`` stays 0), so nothing
else in a result shows it.

``probe()`` times a fixed workload in CPU time: for each of 25 records, decode and re-encode a Chatwoot
event with orjson, sign it twice with HMAC-SHA256, build a header list and a dict (the worker's kind of
work). It returns the median of its tries, in ms; lower is faster. ``make bench`` probes with the machine
otherwise idle beside the bounds, before each scenario's drain, before and after its paced run, and
around the peers, and once every quarter second of a paced run (``tries=1``: about half a millisecond).
A figure that moved between two runs while the probes moved with it came from the machine, not the code.
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
