"""A small HTTP/1.1 load generator: keep-alive connections on raw sockets, closed loop.

`python -m benchmarks._loadgen PORT PATH CONNECTIONS DURATION_S MAX_REQUESTS` sends GET
requests on CONNECTIONS connections, each waiting for its answer before the next, until
DURATION_S passed or MAX_REQUESTS were answered, and prints one JSON line: requests answered,
errors, elapsed seconds, and latency quantiles in milliseconds. A process of its own, so that
it never shares the server's interpreter; asyncio on raw sockets, so that it costs little CPU
next to the server on a two-core machine.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def _connection(
    port: int, request: bytes, deadline: float, budget: list[int], latencies: list[float]
) -> int:
    errors = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()
    return errors


async def _main(port: int, path: str, connections: int, duration_s: float, limit: int) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    budget = [limit]
    started = time.perf_counter()
    deadline = started + duration_s
    errors = await asyncio.gather(
        *(_connection(port, request, deadline, budget, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def q(fraction: float) -> float:
        return (
            ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1e3 if ordered else 0.0
        )

    print(
        json.dumps(
            {
                "requests": len(ordered),
                "errors": sum(errors),
                "elapsed_s": elapsed,
                "p50_ms": q(0.50),
                "p99_ms": q(0.99),
            }
        )
    )


if __name__ == "__main__":
    port, path, connections, duration_s, limit = sys.argv[1:6]
    asyncio.run(_main(int(port), path, int(connections), float(duration_s), int(limit)))
