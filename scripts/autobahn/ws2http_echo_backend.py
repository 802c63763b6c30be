#!/usr/bin/env python3
"""An HTTP-only echo backend for `wsbridge ws2http`, the far end of the Autobahn run through ws2http.

Every frame POST (`/frame`) is pushed straight back through the `ws-bridge-send` callback URL with the
same type (Text as `text/plain; charset=utf-8`, anything else as `application/octet-stream`) *before*
the frame POST is answered. The bridge has one frame POST in flight per client, so the echoes keep the
client's order. `/disconnect` is answered 200 and counted.

    ws2http_echo_backend.py 127.0.0.1:9003

Standard library only; HTTP/1.1 keep-alive both ways (one callback connection per handler thread).
"""

import http.client
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Above the 16 MiB of Autobahn's largest message, below anything a test would send by mistake.
MAX_BODY = 20 * 1024 * 1024
_local = threading.local()


def callback(url: str, body: bytes, content_type: str) -> int:
    """POSTs `body` to `url` on this thread's keep-alive connection; returns the status."""
    u = urllib.parse.urlsplit(url)
    key = (u.hostname, u.port)
    for attempt in range(2):  # a keep-alive connection the bridge closed is re-opened once
        conn = getattr(_local, "conns", {}).get(key)
        if conn is None:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            _local.__dict__.setdefault("conns", {})[key] = conn
        try:
            conn.request("POST", u.path or "/", body=body, headers={"Content-Type": content_type})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (ConnectionError, http.client.HTTPException):
            conn.close()
            del _local.conns[key]
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per request would flood the CI log
        pass

    def reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        if length > MAX_BODY:
            self.reply(413)
            self.close_connection = True
            return
        body = self.rfile.read(length)
        if self.path.startswith("/frame"):
            send = self.headers.get("ws-bridge-send")
            if not send:
                self.reply(400, b"no ws-bridge-send header")
                return
            ctype = (self.headers.get("Content-Type") or "").lower().replace(" ", "")
            text = ctype.startswith("text/plain") and "charset=utf-8" in ctype
            status = callback(send, body, "text/plain; charset=utf-8" if text else "application/octet-stream")
            # A 404 means the client has gone in the meantime (e.g. a case that closes right after
            # sending): not this backend's failure.
            self.reply(200 if status in (200, 404) else 502)
        elif self.path.startswith("/disconnect"):
            self.reply(200)
        else:
            self.reply(404)


def main() -> None:
    host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9003").rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    print(f"ws2http echo backend on http://{host}:{port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
