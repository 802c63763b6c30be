#!/usr/bin/env python3
"""The load generator and monitor of the soak run (scripts/soak.sh).

For MINUTES it keeps up to CONCURRENCY clients busy against three `wsbridge` processes, one per mode,
each client picking a mode at random, doing 1–5 checked echo round trips of random sizes and leaving
in one of three ways:

- clean:  tcp2ws: FIN, then read to EOF; WebSocket modes: the close handshake (1000);
- abrupt: a reset (SO_LINGER 0) between round trips;
- mid:    a reset in the middle of a message (tcp2ws: with unread echo in flight; WebSocket modes:
          after half of a frame).

Every 10 s it prints one line per bridge process: open descriptors (/proc/PID/fd), resident set
(/proc/PID/status VmRSS), clients done and errors seen (an echo that differs, a refused or timed-out
connect, a clean close that was not 1000…). When the load stops it waits for the descriptors to
return to the idle baseline (up to SETTLE seconds) and prints a summary: min/max/last of both, the
values after the load, and the drift of the resident set under load (the peak of the last quarter of
the run against that of the first: a leak grows it). The exit status is 1 if a bridge died, an error
was seen, or the descriptors did not come back.

    load.py --minutes M --tcp2ws HOST:PORT --ws2tcp HOST:PORT --ws2http HOST:PORT \\
            --ws2http-backend http://HOST:PORT --pid tcp2ws=PID --pid ws2tcp=PID --pid ws2http=PID
"""

import argparse
import asyncio
import os
import random
import socket
import struct
import sys
import time
import urllib.parse

import websockets
from websockets.asyncio.client import connect as ws_connect

OP_TIMEOUT = 15.0
MODES = ("tcp2ws", "ws2tcp", "ws2http")


class Stats:
    def __init__(self):
        self.done = {m: 0 for m in MODES}
        self.errors = {m: 0 for m in MODES}
        self.ends = {m: {"clean": 0, "abrupt": 0, "mid": 0} for m in MODES}
        self.samples = []  # the first error messages

    def error(self, mode, what):
        self.errors[mode] += 1
        if len(self.samples) < 20:
            self.samples.append(f"{mode}: {what}")


def reset(sock) -> None:
    """SO_LINGER 0: the close that follows sends a reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def payload(rng: random.Random) -> bytes:
    n = rng.choice((1, 100, 1000, 4096, 16384, 65536, 200_000))
    return os.urandom(rng.randint(1, n))


# ---- tcp2ws: a TCP client; the backend echoes ----

async def tcp2ws_client(addr, rng, end, stats):
    host, port = addr
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), OP_TIMEOUT)
    try:
        for _ in range(rng.randint(1, 5)):
            data = payload(rng)
            writer.write(data)
            await asyncio.wait_for(writer.drain(), OP_TIMEOUT)
            got = await asyncio.wait_for(reader.readexactly(len(data)), OP_TIMEOUT)
            if got != data:
                stats.error("tcp2ws", f"echo of {len(data)} bytes differs")
                return
        if end == "clean":
            writer.write_eof()
            rest = await asyncio.wait_for(reader.read(), OP_TIMEOUT)
            if rest:
                stats.error("tcp2ws", f"{len(rest)} unexpected bytes before EOF")
        elif end == "abrupt":
            reset(writer.get_extra_info("socket"))
        else:  # mid: data in flight both ways, then a reset
            writer.write(os.urandom(100_000))
            reset(writer.get_extra_info("socket"))
    finally:
        writer.transport.abort() if end != "clean" else writer.close()


# ---- the WebSocket modes ----

async def ws_client(mode, url, rng, end, stats):
    ws = await asyncio.wait_for(
        ws_connect(url, max_size=None, ping_interval=None, compression=None, open_timeout=OP_TIMEOUT),
        OP_TIMEOUT + 1,
    )
    try:
        for _ in range(rng.randint(1, 5)):
            if mode == "ws2http" and rng.random() < 0.3:
                data = "✓ " + os.urandom(rng.randint(1, 2000)).hex()
            else:
                data = payload(rng)
            await asyncio.wait_for(ws.send(data), OP_TIMEOUT)
            got = await asyncio.wait_for(ws.recv(), OP_TIMEOUT)
            if mode == "ws2tcp" and isinstance(data, bytes):
                # the target's bytes come back as Binary, possibly in several messages
                buf = bytearray(got)
                while len(buf) < len(data):
                    buf += await asyncio.wait_for(ws.recv(), OP_TIMEOUT)
                got = bytes(buf)
            if got != data:
                stats.error(mode, f"echo of {len(data)} differs")
                return
        transport = ws.transport
        if end == "clean":
            await asyncio.wait_for(ws.close(), OP_TIMEOUT)
            if ws.close_code not in (1000,):
                stats.error(mode, f"clean close got {ws.close_code} {ws.close_reason!r}")
        elif end == "abrupt":
            reset(transport.get_extra_info("socket"))
            transport.abort()
        else:  # mid: half of a 64 KiB masked Binary frame, then a reset
            header = bytes([0x82, 0xFE]) + struct.pack("!H", 65535) + os.urandom(4)
            transport.write(header + os.urandom(rng.randint(1, 30000)))
            await asyncio.sleep(0.01)
            reset(transport.get_extra_info("socket"))
            transport.abort()
    finally:
        if end != "clean":
            ws.transport.abort()


async def one_client(args, rng, stats):
    mode = rng.choice(MODES)
    end = rng.choices(("clean", "abrupt", "mid"), weights=(6, 2, 2))[0]
    try:
        if mode == "tcp2ws":
            await tcp2ws_client(args.tcp2ws, rng, end, stats)
        elif mode == "ws2tcp":
            await ws_client(mode, f"ws://{args.ws2tcp[0]}:{args.ws2tcp[1]}/", rng, end, stats)
        else:
            await ws_client(mode, args.ws2http_url, rng, end, stats)
        stats.ends[mode][end] += 1
    except (asyncio.TimeoutError, TimeoutError):
        stats.error(mode, f"timeout ({end})")
    except (OSError, websockets.WebSocketException, asyncio.IncompleteReadError) as e:
        stats.error(mode, f"{type(e).__name__}: {e} ({end})")
    finally:
        stats.done[mode] += 1


async def worker(args, seed, deadline, stats):
    rng = random.Random(seed)
    await asyncio.sleep(rng.random() * 2)  # a ramp, not a step, to full concurrency
    while time.monotonic() < deadline:
        await one_client(args, rng, stats)
        await asyncio.sleep(rng.random() * 0.05)


# ---- the processes ----

def sample(pid):
    """(open descriptors, RSS bytes) of PID, or None if it is gone."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
        return fds, rss
    except (OSError, StopIteration):
        return None


def mib(n):
    return f"{n / (1 << 20):.1f} MiB"


class Track:
    def __init__(self, pid):
        self.pid = pid
        self.base = sample(pid)
        self.fds = []
        self.rss = []
        self.last = self.base

    def take(self):
        s = sample(self.pid)
        self.last = s
        if s:
            self.fds.append(s[0])
            self.rss.append(s[1])
        return s


def line(t, mode, tr, stats):
    s = tr.take()
    state = f"fds={s[0]:5d} rss={mib(s[1]):>10}" if s else "DEAD"
    return (f"[{t:6.0f}s] {mode:8s} pid={tr.pid} {state} done={stats.done[mode]} "
            f"errors={stats.errors[mode]}")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--settle", type=float, default=30.0)
    for m in MODES:
        ap.add_argument(f"--{m}", required=True)
    ap.add_argument("--ws2http-backend", required=True)
    ap.add_argument("--pid", action="append", default=[])
    args = ap.parse_args()
    for m in MODES:
        h, p = getattr(args, m).rsplit(":", 1)
        setattr(args, m, (h, int(p)))
    b = args.ws2http_backend.rstrip("/")
    q = urllib.parse.urlencode({"f": f"{b}/frame", "d": f"{b}/disconnect"})
    args.ws2http_url = f"ws://{args.ws2http[0]}:{args.ws2http[1]}/connect?{q}"
    pids = dict(p.split("=", 1) for p in args.pid)
    tracks = {m: Track(int(pids[m])) for m in MODES}
    for m, tr in tracks.items():
        print(f"baseline {m:8s} pid={tr.pid} fds={tr.base[0]} rss={mib(tr.base[1])}", flush=True)

    stats = Stats()
    start = time.monotonic()
    deadline = start + args.minutes * 60
    workers = [asyncio.create_task(worker(args, 1000 + i, deadline, stats))
               for i in range(args.concurrency)]
    while time.monotonic() < deadline:
        await asyncio.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
        t = time.monotonic() - start
        for m in MODES:
            print(line(t, m, tracks[m], stats), flush=True)
    await asyncio.wait_for(asyncio.gather(*workers), 4 * OP_TIMEOUT)
    print(f"load stopped after {time.monotonic() - start:.0f}s; waiting up to {args.settle:.0f}s "
          "for the bridges to settle", flush=True)

    settle_end = time.monotonic() + args.settle
    while time.monotonic() < settle_end:
        if all((s := sample(tr.pid)) and s[0] <= tr.base[0] for tr in tracks.values()):
            break
        await asyncio.sleep(1)
    await asyncio.sleep(2)  # let the allocator settle too
    failed = False
    print("\n==== soak summary ====")
    print(f"duration {args.minutes:g} min, concurrency {args.concurrency}")
    for m in MODES:
        tr = tracks[m]
        after = sample(tr.pid)
        ends = stats.ends[m]
        print(f"{m:8s} clients {stats.done[m]} (clean {ends['clean']}, abrupt {ends['abrupt']}, "
              f"mid-message {ends['mid']}), errors {stats.errors[m]}")
        if after is None:
            print(f"         pid {tr.pid}: DIED")
            failed = True
            continue
        fds_back = after[0] <= tr.base[0]
        failed |= not fds_back
        print(f"         fds  baseline {tr.base[0]}, min {min(tr.fds)}, max {max(tr.fds)}, "
              f"last under load {tr.fds[-1]}, after {after[0]} -> "
              f"{'back to baseline' if fds_back else 'NOT back to baseline'}")
        print(f"         rss  baseline {mib(tr.base[1])}, min {mib(min(tr.rss))}, max {mib(max(tr.rss))}, "
              f"last under load {mib(tr.rss[-1])}, after {mib(after[1])} "
              f"({'+' if after[1] >= tr.base[1] else '-'}{mib(abs(after[1] - tr.base[1]))} vs baseline, "
              f"{mib(max(tr.rss) - after[1])} below the peak)")
        q = max(1, len(tr.rss) // 4)
        first, last = max(tr.rss[:q]), max(tr.rss[-q:])
        drift = last - first
        print(f"         rss  drift under load: max of the first quarter {mib(first)}, of the last "
              f"quarter {mib(last)} -> {'steady' if drift <= 4 << 20 else 'GROWING'} "
              f"({'+' if drift >= 0 else '-'}{mib(abs(drift))})")
    if stats.samples:
        print("first errors:")
        for s in stats.samples:
            print(f"  {s}")
    failed |= any(stats.errors.values())
    print("RESULT:", "FAIL" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
