#!/usr/bin/env python3
"""Reference echo server (Python `websockets`) for Autobahn/kosoku fuzzingclient runs.

Echoes every message back unchanged: text stays text, binary stays binary.
Usage: py_echo_server.py [HOST] [PORT]   (default 127.0.0.1 9001)
"""
import asyncio
import os
import signal
import sys

# websockets caps a fragmented message at 4096 frames by default (closing with
# 1009 "too many fragments"), which fails Autobahn 9.3.1/9.3.2/9.4.1/9.4.2
# (4 MiB in 64/256-byte fragments). Raise the cap; it must be set before import.
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 20))

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

MAX_SIZE = 16 * 1024 * 1024


async def echo(ws):
    try:
        async for message in ws:  # str for text, bytes for binary
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 9001
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # compression=None: no permessage-deflate (cases 12/13 are out of scope).
    async with serve(echo, host, port, max_size=MAX_SIZE, compression=None,
                     ping_interval=None):
        print(f"py_echo_server listening on ws://{host}:{port}", file=sys.stderr, flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
