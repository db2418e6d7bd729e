#!/usr/bin/env python3
"""The ingest abuse cases of the "Hardening" issue, against a real `webhook-sink run`.

    python3 bench/ingest_abuse.py [--bin target/release/webhook-sink] [--nofile N] [CASE...]

Cases (all by default): big (60 connections each sending a 10 MiB body, complete or
stalled one byte short, then waiting), burst (60 connections each sending 1000 events
at once: what was answered 200 must be what is delivered), stall (a body that stops after `[`), slow (150
slow bodies, then /health and a good sender), oversize (one 10 MiB NDJSON body of
349,522 events into sinks with `buffer.max_events = 1000`, one sink and three).

For each case it prints the answers (status counts and how long they took), the
process's peak RSS (VmHWM) and what the loopback receiver got. Python standard library
only; every wait is bounded.
"""

import argparse
import asyncio
import collections
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Receiver:
    """A loopback webhook endpoint: answers 200 to everything, counts requests."""

    def __init__(self):
        self.count = 0
        self.port = free_port()

    async def start(self):
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", self.port, limit=4 * MIB)

    async def serve(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.count += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class Sink:
    """A running `webhook-sink run` with its config and log."""

    def __init__(self, binary, receiver_port, sinks=1, max_events=None, nofile=None, extra=""):
        self.dir = tempfile.mkdtemp(prefix="ingest-abuse-")
        self.port = free_port()
        buffer = f"buffer.max_events = {max_events}\n" if max_events else ""
        text = (
            f'data_dir = "{self.dir}/data"\n\n'
            f'[sources.in]\ntype = "http_server"\naddress = "127.0.0.1:{self.port}"\n{extra}\n'
        )
        for i in range(sinks):
            text += (
                f'[sinks.s{i}]\ntype = "webhook"\ninputs = ["in"]\n'
                f'url = "http://127.0.0.1:{receiver_port}/hook"\nhealthcheck.enabled = false\n{buffer}\n'
            )
        config = os.path.join(self.dir, "pipeline.toml")
        with open(config, "w") as f:
            f.write(text)
        self.log = open(os.path.join(self.dir, "log"), "w")

        def limits():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [binary, "run", "--config", config],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env={**os.environ, "WEBHOOK_SINK_LOG": "warn"},
            preexec_fn=limits,
        )

    async def ready(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise SystemExit("webhook-sink did not start; log in " + self.log.name)

    def rss_mb(self):
        kb = proc_kb(self.proc.pid, "VmRSS")
        return kb / 1024 if kb else None

    def hwm_mb(self):
        kb = proc_kb(self.proc.pid, "VmHWM")
        return kb / 1024 if kb else None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


async def read_answer(reader, timeout):
    """The status of the next answer, 'closed' or 'timeout'."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except asyncio.TimeoutError:
        return "timeout", b""
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        return "closed", b""
    status = head.split(b" ", 2)[1].decode()
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    try:
        body = await asyncio.wait_for(reader.readexactly(length), timeout)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        body = b""
    return status, body


def head(port, length, extra=""):
    return (
        f"POST / HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/x-ndjson\r\n"
        f"content-length: {length}\r\n{extra}\r\n"
    ).encode()


async def post(port, body, timeout=30):
    """One complete POST on a new connection: (status, seconds, body)."""
    start = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        return f"connect failed ({type(e).__name__})", time.monotonic() - start, b""
    try:
        writer.write(head(port, len(body)) + body)
        await asyncio.wait_for(writer.drain(), timeout)
        status, answer = await read_answer(reader, timeout)
    except (ConnectionError, asyncio.TimeoutError) as e:
        status, answer = f"send failed ({type(e).__name__})", b""
    writer.close()
    return status, time.monotonic() - start, answer


async def get_health(port, timeout=10):
    start = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(f"GET /health HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode())
        status, _ = await read_answer(reader, timeout)
        writer.close()
    except (OSError, asyncio.TimeoutError) as e:
        status = f"connect failed ({type(e).__name__})"
    return status, time.monotonic() - start


def event_body(size):
    """NDJSON of realistic events (about 300 bytes each), `size` bytes or a little less."""
    line = (
        '{"eventType":"alert-created","id":"%08d","alertKey":"abuse-%08d",'
        '"summary":"PROBLEM Host Alert: host.example.com is DOWN","details":"%s"}\n'
    )
    out, i = [], 0
    total = 0
    while True:
        text = line % (i, i, "x" * 150)
        if total + len(text) > size:
            break
        out.append(text)
        total += len(text)
        i += 1
    return "".join(out).encode(), i


def summary(results):
    counts = collections.Counter(r[0] for r in results)
    times = [r[1] for r in results]
    return dict(counts), (min(times), max(times)) if times else (0, 0)


async def wait_deliveries(receiver, expected, secs):
    deadline = time.monotonic() + secs
    while receiver.count < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


async def case_big(args, receiver):
    """60 connections, each a 10 MiB body (max_body_bytes is 10 MiB), then waiting."""
    for variant in ("stalled one byte short", "complete"):
        start_count = receiver.count
        sink = Sink(args.bin, receiver.port, nofile=args.nofile)
        await sink.ready()
        base = sink.hwm_mb()
        size = 10 * MIB - 4096
        body, events = event_body(size)
        conns = []

        async def one(i):
            start = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
            except OSError as e:
                return f"connect failed ({e.errno})", 0.0
            conns.append(writer)
            try:
                if variant == "complete":
                    writer.write(head(sink.port, len(body)) + body)
                else:
                    writer.write(head(sink.port, len(body)) + body[:-1])
                await asyncio.wait_for(writer.drain(), 60)
            except (ConnectionError, asyncio.TimeoutError) as e:
                return f"send failed ({type(e).__name__})", time.monotonic() - start
            status, _ = await read_answer(reader, 60)
            return status, time.monotonic() - start

        results = await asyncio.gather(*(one(i) for i in range(60)))
        peak = sink.hwm_mb()
        await wait_deliveries(receiver, start_count + 1, 2)
        health = await get_health(sink.port)
        for w in conns:
            w.close()
        counts, (lo, hi) = summary(results)
        print(
            f"big ({variant}; {len(body)} bytes, {events} events per body, 60 connections): "
            f"RSS {base:.0f} MB at start, peak {peak:.0f} MB; answers {counts} in {lo:.1f}-{hi:.1f} s; "
            f"/health then {health[0]} in {health[1]:.2f} s; receiver got {receiver.count - start_count} (so far)"
        )
        sink.stop()


async def case_burst(args, receiver):
    """60 connections at once, each a body of 1000 events (about 300 KB) that fits the
    default buffer: every event answered 200 must be delivered, nothing else."""
    start_count = receiver.count
    sink = Sink(args.bin, receiver.port, nofile=args.nofile)
    await sink.ready()
    base = sink.hwm_mb()
    body, events = event_body(1000 * 300)
    body = b"".join(body.splitlines(keepends=True)[:1000])
    events = min(events, 1000)
    results = await asyncio.gather(*(post(sink.port, body, timeout=60) for _ in range(60)))
    peak = sink.hwm_mb()
    counts, (lo, hi) = summary(results)
    accepted = counts.get("200", 0) * events
    await wait_deliveries(receiver, start_count + accepted, 120)
    await asyncio.sleep(1)
    print(
        f"burst (60 connections, {len(body)} bytes of {events} events each, default buffer): "
        f"RSS {base:.0f} MB at start, peak {peak:.0f} MB; answers {counts} in {lo:.1f}-{hi:.1f} s; "
        f"{accepted} events accepted, receiver got {receiver.count - start_count}"
    )
    sink.stop()


async def case_stall(args, receiver):
    """A body that stops after `[`."""
    sink = Sink(args.bin, receiver.port, nofile=args.nofile)
    await sink.ready()
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
    writer.write(head(sink.port, 1000) + b"[")
    await writer.drain()
    status, body = await read_answer(reader, args.stall_wait)
    print(
        f"stall (content-length 1000, sent `[`): {status} after {time.monotonic() - start:.1f} s "
        f"(waited up to {args.stall_wait} s) {body[:120]!r}"
    )
    writer.close()
    sink.stop()


async def case_slow(args, receiver):
    """150 slow bodies, then /health and a good sender."""
    start_count = receiver.count
    sink = Sink(args.bin, receiver.port, nofile=args.nofile)
    await sink.ready()
    conns = []
    failed = collections.Counter()
    for _ in range(args.slow):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
            writer.write(head(sink.port, 1 * MIB) + b"[")
            conns.append((reader, writer))
        except OSError as e:
            failed[f"connect failed ({e.errno})"] += 1
    await asyncio.sleep(1)
    fds = open_fds(sink.proc.pid)

    async def trickle():
        # One byte a second on every slow connection until told to stop.
        for _ in range(120):
            for _, w in conns:
                if not w.is_closing():
                    try:
                        w.write(b" ")
                    except ConnectionError:
                        pass
            await asyncio.sleep(1)

    trickler = asyncio.create_task(trickle())
    health = await get_health(sink.port)
    good, _ = event_body(2000)
    sent = await post(sink.port, good, timeout=10)
    answers = await asyncio.gather(*(read_answer(r, 90) for r, _ in conns))
    trickler.cancel()
    statuses = collections.Counter(a[0] for a in answers)
    health_after = await get_health(sink.port)
    await wait_deliveries(receiver, start_count + 1, 5)
    print(
        f"slow ({args.slow} bodies trickling a byte a second; {open_fds(sink.proc.pid)} fds open after, "
        f"{fds} with them open; connects refused {dict(failed)}): /health {health[0]} in {health[1]:.2f} s, "
        f"good sender {sent[0]} in {sent[1]:.2f} s {sent[2][:80]!r}; slow bodies answered {dict(statuses)}; "
        f"/health after {health_after[0]}; receiver got {receiver.count - start_count}"
    )
    for _, w in conns:
        w.close()
    sink.stop()


async def case_oversize(args, receiver):
    """One 10 MiB NDJSON body of 349,522 events into sinks holding 1000 events."""
    line = b'{"eventType":"alert-created"}\n'
    body = line * (10 * MIB // len(line))
    for sinks in (1, 3):
        start_count = receiver.count
        sink = Sink(args.bin, receiver.port, sinks=sinks, max_events=1000, nofile=args.nofile)
        await sink.ready()
        base = sink.hwm_mb()
        status, secs, answer = await post(sink.port, body, timeout=120)
        peak = sink.hwm_mb()
        await asyncio.sleep(args.deliver_wait)
        print(
            f"oversize ({len(body)} bytes, {len(body) // len(line)} events, {sinks} sink(s) with "
            f"max_events 1000): {status} in {secs:.1f} s {answer[:200]!r}; RSS {base:.0f} MB at start, "
            f"peak {peak:.0f} MB; receiver got {receiver.count - start_count} in the {args.deliver_wait} s after"
        )
        sink.stop()


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/release/webhook-sink")
    parser.add_argument("--nofile", type=int, help="RLIMIT_NOFILE of the child (e.g. 256)")
    parser.add_argument("--slow", type=int, default=150, help="slow connections of the `slow` case")
    parser.add_argument("--stall-wait", type=int, default=60)
    parser.add_argument("--deliver-wait", type=int, default=5)
    parser.add_argument("cases", nargs="*", default=["big", "burst", "stall", "slow", "oversize"])
    args = parser.parse_args()
    receiver = Receiver()
    await receiver.start()
    for case in args.cases:
        await globals()["case_" + case](args, receiver)


if __name__ == "__main__":
    asyncio.run(main())
