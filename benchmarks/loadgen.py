"""A small closed-loop HTTP/1.1 load generator on raw asyncio streams (keep-alive, fixed
concurrency), light enough that one process drives a uvicorn worker on the other core.

``python -m benchmarks.loadgen URL [URL ...] --concurrency 16 --seconds 10`` prints JSON:
requests/s, latency percentiles (ms), status counts. Several URLs are requested in turn
(e.g. one per user)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import numpy as np


async def _worker(host: str, port: int, paths: list[str], offset: int, until: float,
                  warm_until: float, lat: list[float], statuses: Counter[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    n = offset
    try:
        while True:
            now = time.perf_counter()
            if now >= until:
                return
            path = paths[n % len(paths)]
            n += 1
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            start = time.perf_counter()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            end = time.perf_counter()
            if start >= warm_until:
                lat.append(end - start)
                statuses[status] += 1
    finally:
        writer.close()


async def run(urls: list[str], concurrency: int, seconds: float, warmup: float
              ) -> dict[str, Any]:
    parts = urlsplit(urls[0])
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    paths = [(u.path or "/") + (f"?{u.query}" if u.query else "")
             for u in (urlsplit(x) for x in urls)]
    lat: list[float] = []
    statuses: Counter[int] = Counter()
    begin = time.perf_counter()
    warm_until = begin + warmup
    until = warm_until + seconds
    await asyncio.gather(*(_worker(host, port, paths, i * 7919, until, warm_until, lat,
                                   statuses) for i in range(concurrency)))
    a = np.asarray(lat) * 1000.0
    return {
        "requests": len(lat),
        "seconds": seconds,
        "rps": len(lat) / seconds,
        "p50_ms": float(np.percentile(a, 50)) if a.size else None,
        "p90_ms": float(np.percentile(a, 90)) if a.size else None,
        "p99_ms": float(np.percentile(a, 99)) if a.size else None,
        "max_ms": float(a.max()) if a.size else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "concurrency": concurrency,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("urls", nargs="+")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--urls-file", help="read more URLs, one per line")
    args = ap.parse_args()
    urls = list(args.urls)
    if args.urls_file:
        with open(args.urls_file) as f:
            urls += [line.strip() for line in f if line.strip()]
    print(json.dumps(asyncio.run(run(urls, args.concurrency, args.seconds, args.warmup))))


if __name__ == "__main__":
    main()
