"""A minimal HTTP/1.1 load generator on raw asyncio streams, for ``bench_serve.py``.

The servers under test and the load share the machine's cores, so the client must be cheap: keep-alive
connections, requests pre-encoded to bytes, responses parsed just enough to find their end. A full client
(httpx) costs several times more CPU per request and would take it from the servers it measures.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def encode_request(method: str, path: str, body: bytes = b"", host: str = "127.0.0.1") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    headers = head.lower()
    if b"transfer-encoding: chunked" in headers:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, body
            body += chunk[:-2]
    i = headers.find(b"content-length:")
    length = int(headers[i + 15 : headers.find(b"\r\n", i)]) if i >= 0 else 0
    return status, await reader.readexactly(length)


@dataclass
class Result:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        if q == 50:
            return statistics.median(self.latencies) * 1e3
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q / 100 * len(s)))] * 1e3


async def run_load(host: str, port: int, requests: list[bytes], concurrency: int, seconds: float,
                   max_requests: int | None = None, follow: Callable[[], tuple[str, int]] | None = None,
                   stop: threading.Event | None = None) -> Result:  # fmt: skip
    """``concurrency`` keep-alive connections sending ``requests`` round-robin for ``seconds`` (or ``max_requests``,
    or until ``stop`` is set).

    ``follow``, when given, is what a load balancer does: it names the server to use now (re-read every 0.2 s, in
    a thread, as it may block); a connection to another server is replaced before its next request.
    """
    result = Result(seconds)
    deadline = time.perf_counter() + seconds
    sent = 0
    target = (host, port)
    done = asyncio.Event()

    async def refresh() -> None:
        nonlocal target
        while not done.is_set():
            target = await asyncio.to_thread(follow)
            await asyncio.sleep(0.2)

    def running() -> bool:
        return time.perf_counter() < deadline and (max_requests is None or sent < max_requests) and not (stop and stop.is_set())

    async def connect() -> tuple:
        while True:  # a server that refuses (a replica gone, none yet) counts one error per try
            connected = target
            try:
                return connected, *(await asyncio.open_connection(*connected))
            except OSError as err:
                result.errors += 1
                result.first_error = result.first_error or f"connect {connected}: {err!r}"
                if not running():
                    raise
                await asyncio.sleep(0.1)

    async def worker(offset: int) -> None:
        nonlocal sent
        connected, reader, writer = await connect()
        i = offset
        try:
            while running():
                if connected != target:
                    writer.close()
                    connected, reader, writer = await connect()
                sent += 1
                t = time.perf_counter()
                try:
                    status, body = await _roundtrip(reader, writer, requests[i % len(requests)])
                except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                    result.errors += 1
                    result.first_error = result.first_error or repr(err)
                    writer.close()
                    connected, reader, writer = await connect()
                    continue
                if status == 200:
                    result.latencies.append(time.perf_counter() - t)
                else:
                    result.errors += 1
                    result.first_error = result.first_error or f"HTTP {status}: {body[:200]!r}"
                i += 1
        finally:
            writer.close()

    refresher = asyncio.create_task(refresh()) if follow else None
    if follow:
        target = await asyncio.to_thread(follow)
    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    result.seconds = time.perf_counter() - start
    done.set()
    if refresher:
        await refresher
    return result


def measure(host: str, port: int, requests: list[bytes], concurrency: int, seconds: float,
            max_requests: int | None = None, follow: Callable[[], tuple[str, int]] | None = None,
            stop: threading.Event | None = None) -> Result:  # fmt: skip
    return asyncio.run(run_load(host, port, requests, concurrency, seconds, max_requests, follow, stop))


async def _sequential(targets: dict[str, tuple[str, int, list[bytes]]], n: int, warmup: int) -> dict[str, Result]:
    results = {name: Result(0.0) for name in targets}
    conns = {name: await asyncio.open_connection(host, port) for name, (host, port, _) in targets.items()}
    try:
        for k in range(warmup + n):
            for name, (_, _, requests) in targets.items():
                reader, writer = conns[name]
                t = time.perf_counter()
                status, body = await _roundtrip(reader, writer, requests[k % len(requests)])
                elapsed = time.perf_counter() - t
                if status != 200:
                    results[name].errors += 1
                    results[name].first_error = results[name].first_error or f"HTTP {status}: {body[:200]!r}"
                elif k >= warmup:
                    results[name].latencies.append(elapsed)
                    results[name].seconds += elapsed
    finally:
        for _, writer in conns.values():
            writer.close()
    return results


def sequential(targets: dict[str, tuple[str, int, list[bytes]]], n: int, warmup: int = 20) -> dict[str, Result]:
    """One request at a time to each target in turn, ``n`` rounds after ``warmup``: every server sees the same
    machine conditions, which on a shared machine drift more than the differences measured."""
    return asyncio.run(_sequential(targets, n, warmup))


def wait_ready(host: str, port: int, path: str = "/v1/health", timeout: float = 300, method: str = "GET") -> None:
    """Until ``method path`` answers 200."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.request(method, f"http://{host}:{port}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no server answering {method} {path} on {host}:{port} after {timeout} s")
