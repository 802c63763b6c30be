#!/usr/bin/env python3
"""The far ends of the soak run (scripts/soak.sh), in one asyncio process:

- a WebSocket echo backend for `wsbridge tcp2ws`: Binary frames (data) are sent back, Text frames
  (control: `bridge_hello`, `eof`) are ignored;
- a TCP echo target for `wsbridge ws2tcp --target`.

    backends.py WS_PORT TCP_PORT

(The ws2http backend is scripts/autobahn/ws2http_echo_backend.py.) Needs `websockets`.
"""

import asyncio
import sys

import websockets
from websockets.asyncio.server import serve


async def ws_echo(ws) -> None:
    try:
        async for message in ws:
            if isinstance(message, bytes):
                await ws.send(message)
    except websockets.ConnectionClosed:
        pass


async def tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main() -> None:
    ws_port, tcp_port = int(sys.argv[1]), int(sys.argv[2])
    async with serve(ws_echo, "127.0.0.1", ws_port, max_size=None, ping_interval=None,
                     compression=None, backlog=1024):
        server = await asyncio.start_server(tcp_echo, "127.0.0.1", tcp_port, backlog=1024)
        print(f"soak backends: ws://127.0.0.1:{ws_port}/ and tcp 127.0.0.1:{tcp_port}", flush=True)
        async with server:
            await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
