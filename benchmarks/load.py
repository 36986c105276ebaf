"""A lean closed-loop HTTP load generator for the endpoint benchmarks.

On a 2-core machine the load generator shares the CPU with gunicorn,
PostgreSQL and Redis, so what it costs per request is taken from the system
under test. ``http.client`` with threads costs several hundred microseconds of
Python per request; this one writes the request bytes on a fresh connection
(gunicorn's sync workers close every connection anyway) and reads the reply
until the server closes it, from coroutines on one event loop. Every reply's
status line is checked, so a fast error can never pass for a fast answer.
"""

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    latencies: list[float]  # seconds, of the successful requests, sorted
    errors: list[str]
    elapsed: float  # seconds of the measured run

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies) / self.elapsed

    def percentile_ms(self, q: float) -> float:
        """The ordinal percentile: the smallest latency with at least q of them at or below it."""
        index = min(len(self.latencies), max(1, math.ceil(len(self.latencies) * q))) - 1
        return self.latencies[index] * 1000


def request_bytes(*, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _client(
    port: int, requests: Sequence[bytes], latencies: list[float], errors: list[str], expect: bytes
) -> None:
    for raw in requests:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            reply = await reader.read()  # until the server closes
            writer.close()
        except OSError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        status = reply[9:12]
        if status != expect:
            errors.append(f"HTTP {status.decode(errors='replace') or 'no reply'}: {reply[-200:]!r}")
            continue
        latencies.append(time.perf_counter() - started)


def closed_loop(*, port: int, requests: Sequence[bytes], concurrency: int, expect: int = 200) -> LoadResult:
    """Send ``requests`` over ``concurrency`` clients, each waiting for its reply before the next.

    A reply with another status than ``expect`` is an error, not a latency.
    """

    async def main() -> LoadResult:
        latencies: list[float] = []
        errors: list[str] = []
        started = time.perf_counter()
        await asyncio.gather(
            *(
                _client(port, requests[i::concurrency], latencies, errors, str(expect).encode())
                for i in range(concurrency)
            )
        )
        return LoadResult(sorted(latencies), errors, time.perf_counter() - started)

    return asyncio.run(main())
