"""The naive loop a peer would write with the pipeline's own two libraries.

``python -m bench.peers.naive --bootstrap HOST:PORT --topic T --group G --url URL``: an aiokafka
consumer (auto-commit off, earliest) fetches with ``getmany``; each fetched partition's records are
POSTed with aiohttp one at a time (the partitions of a batch concurrently), then the batch's
offsets are committed. Headers: ``Content-Type: application/json`` and ``webhook-id`` (the
record's CloudEvents id). A non-2xx answer or a connection error is counted and the record
dropped: no retries, no signatures, no attempt records, no metrics. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import aiohttp
from aiokafka import AIOKafkaConsumer, ConsumerRecord


def delivery_id(record: ConsumerRecord[bytes, bytes]) -> str:
    for key, value in record.headers:
        if key == "ce_id":
            return str(value.decode())
    return f"{record.topic}-{record.partition}-{record.offset}"


async def post_each(http: aiohttp.ClientSession, url: str, records: Sequence[ConsumerRecord[bytes, bytes]]) -> int:
    """POST the records in order, one at a time. Returns how many failed."""
    failed = 0
    for record in records:
        headers = {"Content-Type": "application/json", "webhook-id": delivery_id(record)}
        try:
            async with http.post(url, data=record.value, headers=headers) as response:
                await response.read()
                failed += not 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            failed += 1
    return failed


async def drain(args: argparse.Namespace, stop: asyncio.Event) -> int:
    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    failed = 0
    await consumer.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                if not batch:
                    continue
                results = await asyncio.gather(*(post_each(http, args.url, records) for records in batch.values()))
                failed += sum(results)
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
    finally:
        await consumer.stop()
    return failed


async def serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    failed = await drain(args, stop)
    print(f"naive loop stopped; {failed} deliveries failed", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.naive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--url", required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(args))
    return uvloop.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
