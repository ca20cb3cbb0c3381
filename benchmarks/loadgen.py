"""A minimal HTTP/1.1 load generator on raw asyncio streams, for ``bench_serve.py``.

The servers under test and the load share the machine's cores, so the client must be cheap: keep-alive
connections, requests pre-encoded to bytes, responses parsed just enough to find their end. A full client
(httpx) costs several times more CPU per request and would take it from the servers it measures.
"""

from __future__ import annotations

import asyncio
import statistics
import time
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
                   max_requests: int | None = None) -> Result:  # fmt: skip
    """``concurrency`` keep-alive connections sending ``requests`` round-robin for ``seconds`` (or ``max_requests``)."""
    result = Result(seconds)
    deadline = time.perf_counter() + seconds
    sent = 0

    async def worker(offset: int) -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, port)
        i = offset
        try:
            while time.perf_counter() < deadline and (max_requests is None or sent < max_requests):
                sent += 1
                t = time.perf_counter()
                try:
                    status, body = await _roundtrip(reader, writer, requests[i % len(requests)])
                except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                    result.errors += 1
                    result.first_error = result.first_error or repr(err)
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                if status == 200:
                    result.latencies.append(time.perf_counter() - t)
                else:
                    result.errors += 1
                    result.first_error = result.first_error or f"HTTP {status}: {body[:200]!r}"
                i += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


def measure(host: str, port: int, requests: list[bytes], concurrency: int, seconds: float,
            max_requests: int | None = None) -> Result:  # fmt: skip
    return asyncio.run(run_load(host, port, requests, concurrency, seconds, max_requests))
