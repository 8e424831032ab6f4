"""The sign-up rate limiter: calls per second and memory as the number of distinct clients grows.

    python benchmarks/rate_limiter.py --clients 1000,10000,100000,1000000 --calls 200000

For each client count N, the limiter (`newsletter.web.ratelimit.RateLimiter`, 10 per hour, the default
table bound) first sees each of N addresses once; then `--calls` calls go to addresses drawn at random from
those N. A per-call cost that stays flat as N grows is the point: the limiter once scanned every key on each
call past 10,000 clients. It also reports the table's size (never above the bound) and its memory per key.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from common import RESULTS, machine, write_result

from newsletter.web.ratelimit import MAX_KEYS, RateLimiter

LIMIT_PER_HOUR = 10


def address(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" if n < 2**24 else f"2001:db8::{n:x}"


def measure(clients: int, calls: int, seed: int) -> dict[str, Any]:
    """Fill one limiter with `clients` addresses, then time `calls` calls spread over them."""
    limiter = RateLimiter(LIMIT_PER_HOUR)
    keys = [address(n) for n in range(clients)]
    started = time.perf_counter()
    for key in keys:
        limiter.allow(key)
    fill_seconds = time.perf_counter() - started
    picks = random.Random(seed).choices(keys, k=calls)
    allowed = 0
    started = time.perf_counter()
    for key in picks:
        allowed += limiter.allow(key)
    seconds = time.perf_counter() - started
    return {
        "clients": clients,
        "calls": calls,
        "calls_per_second": round(calls / seconds),
        "microseconds_per_call": round(seconds / calls * 1e6, 2),
        "fill_calls_per_second": round(clients / fill_seconds),
        "allowed": allowed,
        "keys_kept": len(limiter),
    }


def bytes_per_key(keys: int) -> float:
    """The table's memory for `keys` addresses, per address (keys included)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    limiter = RateLimiter(LIMIT_PER_HOUR, max_keys=keys)
    for n in range(keys):
        limiter.allow(address(n))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return round(used / keys, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1000,10000,100000,1000000", help="comma-separated client counts")
    parser.add_argument("--calls", type=int, default=200_000, help="timed calls per client count")
    parser.add_argument("--memory-keys", type=int, default=100_000, help="keys for the memory-per-key figure")
    parser.add_argument("--seed", type=int, default=7, help="seed of the random address picks")
    parser.add_argument("--output", type=Path, help="where to write the JSON result")
    args = parser.parse_args(argv)
    output: Path = args.output or RESULTS / "rate_limiter.json"

    runs = [measure(int(count), args.calls, args.seed) for count in args.clients.split(",")]
    result: dict[str, Any] = {
        "benchmark": "rate_limiter",
        "command": " ".join(["python", "benchmarks/rate_limiter.py", *(argv or sys.argv[1:])]),
        "limit_per_hour": LIMIT_PER_HOUR,
        "max_keys": MAX_KEYS,
        "runs": runs,
        "bytes_per_key": bytes_per_key(args.memory_keys),
        "machine": machine(),
    }
    write_result(output, result)
    for run in runs:
        print(
            f"{run['clients']:>9,} clients: {run['calls_per_second']:>9,} calls/s "
            f"({run['microseconds_per_call']} µs each), {run['keys_kept']:,} keys kept"
        )
    print(f"memory: {result['bytes_per_key']} bytes per key")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
