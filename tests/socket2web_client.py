#!/usr/bin/env python3
"""A Socket2Web-style client (Python `websockets`, an independent implementation) for tests/tests/ws2tcp.rs.

Usage: socket2web_client.py URL PLAN_JSON

PLAN_JSON is a list of cases, each {"handshake": <raw text to send>, "bulk": <bytes, optional>}. For each
case the client connects, reads the greeting, sends the handshake verbatim, reads the status, and then
either (bulk) sends that many deterministic pseudo-random bytes while reading the echo back, checking
both SHA-1s, or waits for the server's Close. It prints one JSON object per case on stdout:
{"greeting": str, "status": str|null, "close_code": int|null, "close_reason": str|null,
 "sent_sha1": str, "recv_sha1": str, "recv_len": int, "seconds": float}.

Exit 3 if `websockets` is missing, so the Rust test can fail with a clear message.
"""

import hashlib
import json
import sys
import threading
import time

try:
    from websockets.sync.client import connect
    from websockets.exceptions import ConnectionClosed
except ImportError as e:  # pragma: no cover
    print(f"python websockets is missing: {e}", file=sys.stderr)
    sys.exit(3)

TIMEOUT = 20


def pseudo_random(n, seed=7):
    """Deterministic bytes, 1 MiB at a time from a counter run through SHA-256."""
    out = bytearray()
    i = 0
    while len(out) < n:
        block = bytearray()
        while len(block) < (1 << 20):
            block += hashlib.sha256(f"{seed}:{i}".encode()).digest()
            i += 1
        out += block
    return bytes(out[:n])


def run_case(url, case):
    result = {"greeting": None, "status": None, "close_code": None, "close_reason": None}
    start = time.monotonic()
    with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, max_size=None) as ws:
        result["greeting"] = ws.recv(timeout=TIMEOUT)
        ws.send(case["handshake"])
        try:
            result["status"] = ws.recv(timeout=TIMEOUT)
        except ConnectionClosed:
            pass
        n = case.get("bulk", 0)
        if n and result["status"] is not None and "Successfully" in result["status"]:
            data = pseudo_random(n)
            result["sent_sha1"] = hashlib.sha1(data).hexdigest()
            got = hashlib.sha1()
            count = [0]

            def reader():
                while count[0] < n:
                    m = ws.recv(timeout=TIMEOUT)
                    if isinstance(m, str):
                        m = m.encode()
                    got.update(m)
                    count[0] += len(m)

            t = threading.Thread(target=reader)
            t.start()
            step = 64 << 10
            for i in range(0, n, step):
                ws.send(data[i:i + step])
            t.join(TIMEOUT * 3)
            result["recv_sha1"] = got.hexdigest()
            result["recv_len"] = count[0]
            ws.close()
        elif result["status"] is not None and "Successfully" in result["status"]:
            ws.close()
        else:
            # Wait for the server's Close (a failure status is followed by one).
            try:
                while True:
                    ws.recv(timeout=TIMEOUT)
            except ConnectionClosed:
                pass
        if ws.close_code is not None:
            result["close_code"] = ws.close_code
            result["close_reason"] = ws.close_reason
    result["seconds"] = time.monotonic() - start
    return result


def main():
    url, plan = sys.argv[1], json.loads(sys.argv[2])
    for case in plan:
        try:
            r = run_case(url, case)
        except Exception as e:  # reported, the Rust side fails the case
            r = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
