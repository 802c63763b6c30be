#!/usr/bin/env python3
"""Reference Autobahn fuzzingserver client (Python `websockets`).

Implements the Autobahn client protocol: GET /getCaseCount, then for each case
N connect to /runCase?case=N&agent=AGENT and echo every message back unchanged,
finally hit /updateReports?agent=AGENT (which tells the fuzzing server to finish).
Usage: py_echo_client.py [BASE_URL] [AGENT]   (default ws://127.0.0.1:9002 pyclient)
"""
import asyncio
import os
import sys
from urllib.parse import quote

# websockets caps a fragmented message at 4096 frames by default (closing with
# 1009 "too many fragments"), which fails Autobahn 9.3.1/9.3.2/9.4.1/9.4.2
# (4 MiB in 64/256-byte fragments). Raise the cap; it must be set before import.
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 20))

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

MAX_SIZE = 16 * 1024 * 1024
CASE_TIMEOUT = 120  # seconds; a single case must never hang the run


async def run_case(url):
    try:
        async with connect(url, max_size=MAX_SIZE, compression=None,
                           ping_interval=None, open_timeout=10) as ws:
            async for message in ws:
                await ws.send(message)
    except (ConnectionClosed, InvalidHandshake, OSError, EOFError):
        pass


async def main():
    base = (sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:9002").rstrip("/")
    agent = quote(sys.argv[2] if len(sys.argv) > 2 else "pyclient")
    async with connect(f"{base}/getCaseCount", compression=None) as ws:
        count = int(await ws.recv())
    print(f"py_echo_client: {count} cases", file=sys.stderr, flush=True)
    for n in range(1, count + 1):
        try:
            await asyncio.wait_for(run_case(f"{base}/runCase?case={n}&agent={agent}"), CASE_TIMEOUT)
        except asyncio.TimeoutError:
            print(f"py_echo_client: case {n} timed out", file=sys.stderr, flush=True)
    async with connect(f"{base}/updateReports?agent={agent}", compression=None) as ws:
        try:
            await ws.recv()
        except ConnectionClosed:
            pass
    print("py_echo_client: done", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
