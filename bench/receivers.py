"""Benchmark receivers and their arrival logs.

Every receiver writes one line per request it receives: ``<unix time, ms> <webhook-id> <status>``
(the ``webhook-id`` header carries the delivery id; ``status`` is what the receiver answers, ``0``
for a request it holds past the sender's timeout). ``ArrivalLog`` tails those files: they are the
ground truth of arrivals (loss, duplicates) and of arrival times (latency).

- ``Nginx``: Debian's nginx (one worker, no master) answering ``200 {}`` to every POST at once
  (``500 {}`` under ``/fail/``, a webhook that always fails).
  Its ``$msec`` is the time the request completed, which for ``return 200`` is its arrival.
- ``PyReceiver``: an aiohttp receiver in its own process(es) (``python -m bench.receivers``), for
  what nginx cannot do: ``/slow/<ms>/...`` answers after ``ms`` milliseconds, ``/hang/...`` holds
  the request for ``--hang-s`` seconds, anything else answers at once. Several processes share the
  port with ``SO_REUSEPORT``; each writes its own log file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from aiohttp import web

NGINX = "/usr/sbin/nginx"
HOST = "127.0.0.1"
HANG = 0  # the status logged for a request held past the sender's timeout

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    log_format arrivals '$msec $http_webhook_id $status';
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 128k;
    client_max_body_size 4m;
    server {{
        listen {host}:{port} backlog=4096 reuseport;
        access_log {dir}/arrivals-nginx.log arrivals buffer=256k flush=200ms;
        default_type application/json;
        location / {{ return 200 '{{}}'; }}
        location /fail/ {{ return 500 '{{}}'; }}
    }}
}}
"""


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    return found or (NGINX if os.access(NGINX, os.X_OK) else None)


def wait_http(url: str, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers a POST (any status), or raise ``RuntimeError``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0, *, signalled: bool = False) -> int:
    """SIGTERM (unless already ``signalled``: a second one may force an exit), then SIGKILL after ``grace``.

    Returns the exit code."""
    if proc.poll() is None:
        if not signalled:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Nginx:
    """nginx answering ``200 {}`` at once on ``127.0.0.1:<port>``, logging arrivals to ``<dir>``."""

    def __init__(self, directory: Path, port: int) -> None:
        self.dir = directory
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log_glob = str(directory / "arrivals-nginx.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def start(self) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx not found: run `make tools` (Debian package nginx-light)")
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, host=HOST, port=self.port))
        with (self.dir / "nginx.out").open("wb") as out:
            self.proc = subprocess.Popen([binary, "-p", str(self.dir), "-c", str(conf), "-e", "stderr"],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            wait_http(f"{self.url}/ready", proc=self.proc)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"nginx: {exc}: {(self.dir / 'nginx.out').read_text()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            # SIGQUIT: graceful shutdown, open requests end and the buffered access log is written
            # (SIGTERM's fast shutdown lost a buffered line now and then).
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGQUIT)
            stop_process(self.proc, signalled=True)
            self.proc = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class PyReceiver:
    """``procs`` aiohttp receiver processes sharing ``127.0.0.1:<port>``."""

    def __init__(self, directory: Path, port: int, *, procs: int = 1, hang_s: float = 30.0) -> None:
        self.dir = directory
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.n = procs
        self.hang_s = hang_s
        self.log_glob = str(directory / "arrivals-py-*.log")
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> PyReceiver:
        self.dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.n):
            cmd = [sys.executable, "-m", "bench.receivers", "--port", str(self.port),
                   "--log", str(self.dir / f"arrivals-py-{i}.log"), "--hang-s", str(self.hang_s)]
            with (self.dir / f"receiver-{i}.out").open("wb") as out:
                self.procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                                   stderr=subprocess.STDOUT, start_new_session=True))
        try:
            for proc in self.procs:
                wait_http(f"{self.url}/ready", proc=proc)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)
        self.procs = []

    def __enter__(self) -> PyReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# ------------------------------------------------------------------ the Python receiver process


class _Recorder:
    """Buffers arrival lines and appends them to the log file every 200 ms (and on exit)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def record(self, delivery_id: str, status: int) -> None:
        self.lines.append(f"{time.time():.3f} {delivery_id or '-'} {status}\n")

    def flush(self) -> None:
        if self.lines:
            lines, self.lines = self.lines, []
            with self.path.open("a") as log:
                log.write("".join(lines))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.flush()


def receiver_handler(recorder: _Recorder, hang_s: float) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """Every path, one handler: aiohttp's low-level server, without an application's URL dispatch (a
    catch-all route's match and the application's middleware chain were a third of this receiver's CPU,
    which it shares with the pipeline it measures)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        delivery_id = request.headers.get("webhook-id", "-")
        parts = request.path.split("/")
        await request.read()
        if len(parts) > 2 and parts[1] == "hang":
            recorder.record(delivery_id, HANG)
            await asyncio.sleep(hang_s)
            return web.Response(text="{}", content_type="application/json")
        recorder.record(delivery_id, 200)
        if len(parts) > 2 and parts[1] == "slow" and parts[2].isdigit():
            await asyncio.sleep(int(parts[2]) / 1000)
        return web.Response(text="{}", content_type="application/json")

    return handle


async def serve(port: int, log: Path, hang_s: float) -> None:
    recorder = _Recorder(log)
    # handler_cancellation: a hung request whose client gave up stops holding a task.
    runner = web.ServerRunner(web.Server(receiver_handler(recorder, hang_s), handler_cancellation=True,
                                         access_log=None))
    await runner.setup()
    await web.TCPSite(runner, HOST, port, reuse_port=True, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    flusher = asyncio.create_task(recorder.run())
    try:
        await stop.wait()
    finally:
        flusher.cancel()
        recorder.flush()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receivers", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True, help="arrival log file (appended)")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long /hang/... requests are held")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port, args.log, args.hang_s))
    else:
        uvloop.run(serve(args.port, args.log, args.hang_s))
    return 0


# ------------------------------------------------------------------ reading arrival logs


class ArrivalLog:
    """Tails the arrival logs matching some globs; counts first arrivals, duplicates and hangs."""

    def __init__(self, *globs: str) -> None:
        self.globs = globs
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}
        self.first: dict[str, float] = {}  # delivery id -> first arrival answered 2xx
        self.repeats: Counter[str] = Counter()  # delivery id -> arrivals after its first 2xx one
        self.held: Counter[str] = Counter()  # delivery id -> arrivals held past the timeout
        self.other: Counter[int] = Counter()  # other statuses -> count
        self.lines = 0

    def _files(self) -> Iterator[str]:
        import glob

        for pattern in self.globs:
            yield from sorted(glob.glob(pattern))

    def poll(self) -> int:
        """Read what was appended since the last poll. Returns the number of new lines."""
        before = self.lines
        for name in self._files():
            offset = self._offsets.get(name, 0)
            try:
                with open(name, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            self._offsets[name] = offset + len(data)
            data = self._partial.pop(name, b"") + data
            complete, _, rest = data.rpartition(b"\n")
            if rest:
                self._partial[name] = rest
            if complete:
                self._parse(complete.split(b"\n"))
        return self.lines - before

    def _parse(self, lines: list[bytes]) -> None:
        first, repeats, held = self.first, self.repeats, self.held
        for line in lines:
            parts = line.split()
            if len(parts) != 3:
                continue
            self.lines += 1
            stamp, delivery, status = float(parts[0]), parts[1].decode(), int(parts[2])
            if 200 <= status < 300:
                if delivery in first:
                    repeats[delivery] += 1
                else:
                    first[delivery] = stamp
            elif status == HANG:
                held[delivery] += 1
            else:
                self.other[status] += 1


if __name__ == "__main__":
    sys.exit(main())
