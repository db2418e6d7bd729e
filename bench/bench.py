#!/usr/bin/env python3
"""Helpers of bench/load.sh (python3 standard library only).

Subcommands:
  port                      print a free loopback TCP port
  waitport PORT [SECS]      wait (bounded) until 127.0.0.1:PORT accepts connections
  health URL [SECS] [PID]   wait (bounded) until GET URL answers 200
  event                     print one benchmark event (for `webhook-sink render`)
  gen N FILE                write N benchmark events as NDJSON (the peer's input)
  push ...                  POST N events as NDJSON batches (see `push --help`)
  proc PID                  print {"ticks_s": utime+stime seconds, "hwm_kb": VmHWM}
  wait LOG N ...            wait until nginx's log LOG has N lines (bounded)
  count LOG [latency]       summarise an nginx log: deliveries, rate, (latency)
  record RESULTS ...        append one run's result to RESULTS (see `record --help`)
  median RESULTS CONFIG KEY print the median of KEY over CONFIG's successful runs
  report RESULTS ...        print the tables from the results file (JSON lines)
"""

import argparse
import http.client
import json
import math
import os
import re
import socket
import statistics
import sys
import threading
import time

# ---------------------------------------------------------------------------
# Events. The same generator feeds webhook-sink (over HTTP) and syslog-ng (from a
# file), so both see the same data. Distinct alertKeys (KEYS of them, round robin)
# let webhook-sink use its whole request concurrency: events of one alert go out
# one at a time, by design.
KEYS = 1000


def event_line(i, sent_at):
    h = i % 977
    if i % 2 == 0:
        etype, status, prio = "alert-created", "PENDING", "HIGH"
    else:
        etype, status, prio = "alert-resolved", "RESOLVED", "LOW"
    return (
        '{"id":"%d","eventType":"%s","status":"%s","priority":"%s",'
        '"summary":"PROBLEM Host Alert: host%d.example.com is DOWN",'
        '"details":"Check PING on host%d.example.com: CRITICAL - 100%% packet loss\\nsecond line",'
        '"reportTime":"2026-01-01T00:00:00.000Z","alertKey":"bench-%d",'
        '"alertUrl":"https://incidents.example.com/alerts/%d",'
        '"alertSource":{"id":2101194,"name":"Nagios Network and Hosts",'
        '"escalationPolicy":{"id":42,"name":"Default escalation"}},'
        '"links":[{"href":"https://runbooks.example.com/host%d","text":"Runbook"}],'
        '"sentAt":%.6f}\n'
        % (i, etype, status, prio, h, h, i % KEYS, i, h, sent_at)
    )


# `sentAt` as `event_line(i, 0.0)` writes it: what the client replaces at send.
SENT_AT_ZERO = b'"sentAt":0.000000'


def batch_body(start, count, sent_at):
    return "".join(event_line(i, sent_at) for i in range(start, start + count)).encode()


# ---------------------------------------------------------------------------
def cmd_port(_args):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def cmd_waitport(args):
    deadline = time.monotonic() + float(args.secs)
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", int(args.port)), timeout=0.5).close()
            return 0
        except OSError:
            time.sleep(0.05)
    print(f"port {args.port} not listening after {args.secs}s", file=sys.stderr)
    return 1


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def cmd_health(args):
    m = re.match(r"http://([^/:]+):(\d+)(/.*)", args.url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    deadline = time.monotonic() + float(args.secs)
    while time.monotonic() < deadline:
        if args.pid and not pid_alive(args.pid):
            print(f"process {args.pid} exited before {args.url} answered", file=sys.stderr)
            return 1
        try:
            c = http.client.HTTPConnection(host, port, timeout=1)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return 0
        except OSError:
            pass
        time.sleep(0.05)
    print(f"{args.url} did not answer 200 within {args.secs}s", file=sys.stderr)
    return 1


def cmd_event(_args):
    sys.stdout.write(event_line(0, time.time()))


def cmd_gen(args):
    n = int(args.n)
    now = time.time()
    with open(args.file, "w") as f:
        step = 10000
        for start in range(0, n, step):
            f.write("".join(event_line(i, now) for i in range(start, min(n, start + step))))


# ---------------------------------------------------------------------------
class KeptAlive:
    """One kept-alive HTTP/1.1 connection for the client's POSTs, on a plain socket.

    http.client formats every request's head anew and parses every answer's headers with
    the email package: about 150 µs of CPU per batch, 7.6 µs per event with 20-event
    batches, half of what webhook-sink itself spent on an event at half load, on the
    same two cores. Here the request is sent with one `sendall`, its head put together
    from a prefix built once (`post_head`), and the answer is read as far as the
    benchmark needs it: the status, the `Content-Length` body, `Retry-After` and
    `Connection: close`. Anything else (a chunked answer, a malformed head) raises
    `ValueError`, which the caller handles as a broken connection."""

    def __init__(self, host, port, timeout):
        self.address, self.timeout = (host, port), timeout
        self.sock, self.rest = None, b""

    def connect(self):
        self.close()
        self.sock = socket.create_connection(self.address, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock, self.rest = None, b""

    def _more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.rest += chunk

    def exchange(self, request):
        """Sends one whole request; returns (status, headers with lower-case names, body)."""
        if self.sock is None:
            self.connect()
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.rest:
            self._more()
        head, _, self.rest = self.rest.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" not in headers:
            raise ValueError(f"an answer without Content-Length: {head[:200]!r}")
        length = int(headers[b"content-length"])
        while len(self.rest) < length:
            self._more()
        body, self.rest = self.rest[:length], self.rest[length:]
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, headers, body


def post_head(host, port, path, content_type):
    """The head of the client's POSTs up to the `Content-Length` value, which
    `post_request` adds: a body's `sentAt` is filled in at send, and may change its length."""
    return f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\nContent-Length: ".encode()


def post_request(head, body):
    """The bytes of one POST, ready for `KeptAlive.exchange`."""
    return b"%s%d\r\n\r\n%s" % (head, len(body), body)


# ---------------------------------------------------------------------------
# The client. Keep-alive connections (KeptAlive), one thread per connection, each
# sending every CONNS-th batch. A 503 is retried after its Retry-After; a dropped
# connection is reopened and the batch sent again; both bounded.
#
# Without --rate the batches go out back to back (throughput runs). With --rate R
# batch k is due at t0 + k*BATCH/R (open loop) and its events carry that due time as
# `sentAt`, so a sender that falls behind does not hide the delay (no coordinated
# omission). Without --rate, `sentAt` is the actual send time.
#
# Every body is built before the first send, and only its `sentAt` filled in at send, so
# the client spends its CPU on sending: formatting the events on the fly took about
# 2 µs per event of the machine's two cores, which the bare hyper loop (no client at all)
# does not pay (docs/performance.md, seventh session). With --sends FILE, the
# time each batch was actually handed to the connection (its first attempt) is written
# there as JSON, for `count --sends`: latency from ingest, without the client's own
# lateness (Python's threads may wait up to 5 ms for the interpreter lock).
def cmd_push(args):
    m = re.match(r"http://([^/:]+):(\d+)(/.*)", args.url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    n, batch, conns = args.n, args.batch, args.conns
    nbatches = math.ceil(n / batch)
    interval = batch / args.rate if args.rate else 0.0
    deadline = time.monotonic() + args.timeout
    stats = {"retries_503": 0, "reconnects": 0, "late_s_max": 0.0, "errors": []}
    sends = [None] * nbatches
    lock = threading.Lock()
    # Each body is built with `"sentAt":0.000000` and gets its time at send, by one
    # byte replace (a C loop, about 0.3 µs per event).
    bodies = [batch_body(k * batch, min(batch, n - k * batch), 0.0) for k in range(nbatches)]
    head = post_head(host, port, path, "application/x-ndjson")
    t0_wall = time.time() + 0.2
    t0 = time.monotonic() + 0.2

    def worker(tid):
        conn = KeptAlive(host, port, timeout=30)
        late_max = 0.0
        try:
            # Connected before the schedule starts (t0 is 0.2 s away), so no batch's
            # latency from ingest holds the client's own TCP handshake. A failure here is
            # left to the send below, which reconnects.
            conn.connect()
        except OSError:
            conn.close()
        try:
            for k in range(tid, nbatches, conns):
                if interval:
                    due = t0 + k * interval
                    now = time.monotonic()
                    if due > now:
                        time.sleep(due - now)
                    else:
                        late_max = max(late_max, now - due)
                    sent_at = t0_wall + k * interval
                else:
                    sent_at = time.time()
                request = post_request(head, bodies[k].replace(SENT_AT_ZERO, b'"sentAt":%.6f' % sent_at))
                attempts = 0
                while True:
                    attempts += 1
                    if attempts > 600 or time.monotonic() > deadline:
                        raise RuntimeError(f"batch {k}: gave up after {attempts - 1} attempts")
                    if attempts == 1:
                        sends[k] = time.time()
                    try:
                        status, headers, answer = conn.exchange(request)
                    except (OSError, ValueError):
                        with lock:
                            stats["reconnects"] += 1
                        conn.close()
                        time.sleep(0.05)
                        continue
                    if status == 200:
                        break
                    if status == 503:
                        with lock:
                            stats["retries_503"] += 1
                        time.sleep(min(float(headers.get(b"retry-after") or 1), 5.0))
                        continue
                    raise RuntimeError(f"batch {k}: HTTP {status}: {answer[:200]!r}")
        except Exception as e:  # reported in the summary, exit code 1
            with lock:
                stats["errors"].append(str(e))
        finally:
            conn.close()
            with lock:
                stats["late_s_max"] = max(stats["late_s_max"], late_max)

    started = time.monotonic()
    cpu0 = os.times()
    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
    # Paced sends start at t0; the rate is counted from there.
    elapsed = time.monotonic() - (t0 if interval else started)
    if any(t.is_alive() for t in threads):
        stats["errors"].append("push timed out")
    cpu1 = os.times()
    stats["events"] = n
    # The client's own CPU while sending (its share of the machine), per event.
    stats["cpu_us"] = round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / n * 1e6, 2)
    # The events' raw JSON size (NDJSON bodies minus their newlines).
    stats["json_bytes"] = sum(len(event_line(i, 0.0)) - 1 for i in range(n))
    stats["secs"] = round(elapsed, 3)
    stats["offered_per_s"] = round(n / elapsed, 1) if elapsed > 0 else None
    stats["late_s_max"] = round(stats["late_s_max"], 3)
    if args.sends:
        with open(args.sends, "w") as f:
            json.dump({"batch": batch, "sends": sends}, f)
    print(json.dumps(stats))
    return 1 if stats["errors"] else 0


# ---------------------------------------------------------------------------
def cmd_proc(args):
    """CPU time, peak RSS and context switches of one process, or of several side by side
    (the PROCS run): their CPU and switches summed, the largest peak RSS of any of them."""
    ticks = hwm = switches = 0
    for pid in args.pid:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        ticks += int(fields[11]) + int(fields[12])
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]))
        # Context switches of all the process's threads (a thread that parks and is woken
        # again costs a switch; many per event means many wake-ups per event).
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                            switches += int(line.split()[1])
            except OSError:
                pass  # the thread ended meanwhile
    print(json.dumps({"ticks_s": ticks / os.sysconf("SC_CLK_TCK"), "hwm_kb": hwm, "switches": switches}))


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def cmd_wait(args):
    """Wait until LOG has N lines. Gives up when nothing new arrives for --stall
    seconds, after --timeout, or when --pid (the sender) has exited."""
    n = int(args.n)
    deadline = time.monotonic() + args.timeout
    last_change = time.monotonic()
    seen = -1
    offset = 0
    lines = 0
    while True:
        try:
            with open(args.log, "rb") as f:
                f.seek(offset)
                data = f.read()
                lines += data.count(b"\n")
                offset += len(data)
        except FileNotFoundError:
            pass
        now = time.monotonic()
        if lines != seen:
            seen, last_change = lines, now
        if lines >= n:
            return 0
        why = None
        if now > deadline:
            why = f"timeout after {args.timeout}s"
        elif now - last_change > args.stall:
            why = f"no new deliveries for {args.stall}s"
        elif args.pid and not pid_alive(args.pid):
            time.sleep(1.5)  # nginx flushes its log buffer every second
            why = f"process {args.pid} exited"
        if why:
            print(f"wait {args.log}: {lines}/{n} lines: {why}", file=sys.stderr)
            return 1
        time.sleep(0.2)


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


SENT_AT = re.compile(rb"sentAt[^0-9]*([0-9]+(?:\.[0-9]+)?)")
# The event number in the body (the template's `"alert": "{{ alertId }}"`), raw or with
# nginx's JSON escaping: which batch it came in.
ALERT_ID = re.compile(rb'"alert\\?"\s*:\s*\\?"([0-9]+)')


def cmd_count(args):
    ok = bad = 0
    first = last = None
    lat = []
    # Latency from the batch's actual send (push --sends), when given.
    sends = batch = None
    ingest = []
    if args.sends:
        with open(args.sends) as f:
            data = json.load(f)
        sends, batch = data["sends"], data["batch"]
    with open(args.log, "rb") as f:
        for line in f:
            parts = line.rstrip(b"\n").split(b" ", 2)
            if len(parts) < 2:
                continue
            t = float(parts[0])
            if parts[1] != b"204":
                bad += 1
                continue
            ok += 1
            first = t if first is None or t < first else first
            last = t if last is None or t > last else last
            if args.latency:
                m = SENT_AT.search(parts[2] if len(parts) > 2 else b"")
                if m:
                    lat.append((t - float(m.group(1))) * 1000.0)
                if sends is not None:
                    m = ALERT_ID.search(parts[2] if len(parts) > 2 else b"")
                    k = int(m.group(1)) // batch if m else None
                    if k is not None and k < len(sends) and sends[k] is not None:
                        ingest.append((t - sends[k]) * 1000.0)
    out = {"delivered": ok, "non_204": bad}
    if ok > 1 and last > first:
        out["span_s"] = round(last - first, 3)
        out["rate"] = round((ok - 1) / (last - first), 1)
    if args.latency:
        lat.sort()
        out["lat_n"] = len(lat)
        for p in (50, 90, 99):
            v = percentile(lat, p)
            out[f"p{p}_ms"] = round(v, 1) if v is not None else None
        out["max_ms"] = round(lat[-1], 1) if lat else None
    if sends is not None:
        ingest.sort()
        out["ingest_n"] = len(ingest)
        for p in (50, 99):
            v = percentile(ingest, p)
            out[f"ingest_p{p}_ms"] = round(v, 2) if v is not None else None
        out["ingest_max_ms"] = round(ingest[-1], 1) if ingest else None
    print(json.dumps(out))


# ---------------------------------------------------------------------------
def cmd_record(args):
    """Append one run's result to RESULTS: the receiver's count, plus CPU and RSS from
    /proc snapshots taken before the first event and after the last delivery, or (for
    the hyper loop, --client) from the sender's own summary line."""
    rec = {"config": args.config, "run": args.run}
    if args.count:
        try:
            rec.update(json.loads(args.count))
        except ValueError:
            args.error = args.error or f"unparsable count: {args.count[:200]}"
    if args.client:
        # examples/hyper_loop.rs: {"requests","rate","cpu_us","rss_mb","errors",...}. The
        # rate in the table stays the receiver's; the loop's own is kept as client_rate.
        try:
            client = json.loads(args.client)
            rec["client_rate"] = client.get("rate")
            rec["client_requests"] = client.get("requests")
            rec["client_errors"] = client.get("errors")
            if client.get("cpu_us") is not None:
                rec["cpu_us"] = client["cpu_us"]
            if client.get("rss_mb") is not None:
                rec["rss_mb"] = client["rss_mb"]
            if not args.error and client.get("errors"):
                args.error = f"{client['errors']} failed requests at the sender"
            if not args.error and not client.get("requests"):
                args.error = "no request succeeded"
        except (ValueError, AttributeError):
            args.error = args.error or f"unparsable sender summary: {args.client[:200]}"
    elif args.config in ("hyper", "curve_hyper") and not args.error:
        args.error = "no summary line from the hyper loop"
    if args.push:
        try:
            rec["push"] = json.loads(args.push)
            rec["sent_rate"] = rec["push"].get("offered_per_s")
            rec["late_s_max"] = rec["push"].get("late_s_max")
            rec["client_cpu_us"] = rec["push"].get("cpu_us")
        except ValueError:
            rec["push"] = args.push[:200]
    for kv in args.extra:
        k, _, v = kv.partition("=")
        try:
            rec[k] = float(v)
        except ValueError:
            rec[k] = v
    if args.config == "dead" and args.proc1 and isinstance(rec.get("push"), dict):
        rec["rss_mb"] = round(json.loads(args.proc1)["hwm_kb"] / 1024.0, 1)
        rec["raw_mb"] = round(rec["push"].get("json_bytes", 0) / 1048576.0, 1)
        rec["rss_limit_mb"] = round(2 * rec["raw_mb"] + 20, 1)
        if not args.error and rec["push"].get("errors"):
            args.error = f"push errors: {rec['push']['errors'][:2]}"
    if args.proc0 and args.proc1:
        p0, p1 = json.loads(args.proc0), json.loads(args.proc1)
        delivered = rec.get("delivered") or 0
        if delivered:
            rec["cpu_us"] = round((p1["ticks_s"] - p0["ticks_s"]) / delivered * 1e6, 2)
            if "switches" in p0 and "switches" in p1:
                rec["switches_per_event"] = round((p1["switches"] - p0["switches"]) / delivered, 2)
        rec["rss_mb"] = round(p1["hwm_kb"] / 1024.0, 1)
    expected = args.expect
    if not args.error and not expected and not rec.get("rate") and args.config != "dead":
        args.error = f"the receiver counted {rec.get('delivered', 0)} deliveries"
    if not args.error and expected and rec.get("delivered", 0) < expected:
        args.error = f"only {rec.get('delivered', 0)} of {expected} deliveries counted"
    if not args.error and rec.get("non_204"):
        args.error = f"{rec['non_204']} answers other than 204 (auth?)"
    if args.error:
        rec["error"] = args.error
        # A failed run's numbers are kept in the file but not in the table.
        for k in ("rate", "cpu_us", "rss_mb", "p50_ms", "p90_ms", "p99_ms", "max_ms", "ingest_p50_ms", "ingest_p99_ms"):
            if k in rec:
                rec["failed_" + k] = rec.pop(k)
    with open(args.results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    shown = {k: rec[k] for k in ("delivered", "rate", "cpu_us", "switches_per_event", "rss_mb", "raw_mb", "p50_ms", "p99_ms",
                                 "ingest_p50_ms", "ingest_p99_ms", "late_s_max", "client_cpu_us", "offered",
                                 "conc", "template", "body_bytes", "client_rate", "error") if k in rec}
    print(f"  {args.config} run {args.run}: {json.dumps(shown)}", file=sys.stderr)


def cmd_median(args):
    v = []
    with open(args.results) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                if r.get("config") == args.config and r.get(args.key) is not None:
                    v.append(r[args.key])
    if not v:
        return 1
    print(statistics.median(v))


def emit_table(out, table):
    """Append TABLE (a header row, then rows of strings) to OUT, aligned."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for k, r in enumerate(table):
        out.append("  ".join(r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i])
                             for i in range(len(r))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))


def cmd_report(args):
    rows = []
    with open(args.results) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))

    def values(config, key):
        return [r[key] for r in rows if r.get("config") == config and r.get(key) is not None]

    def med(config, key):
        v = values(config, key)
        return statistics.median(v) if v else None

    def fmt(v, nd):
        if v is None:
            return "-"
        return f"{v:,.{nd}f}"

    def cell(config, key, nd=0):
        v = values(config, key)
        if not v:
            return "-"
        if len(v) == 1:
            return fmt(v[0], nd)
        return f"{fmt(statistics.median(v), nd)} ({fmt(min(v), nd)}..{fmt(max(v), nd)})"

    configs = [
        ("ours", "ours: webhook-sink, memory buffer"),
        ("ours_1t", "ours: the same, run --threads 1"),
        ("ours_procs", f"ours: {args.procs} processes side by side (bound of a pipeline per core)"),
        ("ours_disk", "ours: webhook-sink, disk buffer"),
        ("ceiling", "ceiling: wrk -> nginx"),
        ("hyper", "bare client: hyper-util loop -> nginx"),
        ("peer", "peer: syslog-ng http()"),
    ]
    configs = [(c, label) for c, label in configs if values(c, "rate")]
    out = []
    out.append("")
    out.append("webhook-sink end-to-end load benchmark (loopback; counted at the receiver, nginx)")
    out.append(f"machine : {args.machine}")
    out.append(f"command : {args.cmd}")
    out.append(f"settings: {args.settings}")
    if args.note:
        out.append(f"note    : {args.note}")
    out.append("cells   : median (min..max) over the runs")
    out.append("")
    header = ["configuration", "runs", "deliveries/s", "CPU us/event", "peak RSS MB"]
    table = [header]
    for c, label in configs:
        table.append([
            label,
            str(len(values(c, "rate"))),
            cell(c, "rate"),
            cell(c, "cpu_us", 1),
            cell(c, "rss_mb", 1),
        ])
    emit_table(out, table)

    lat_rows = [("lat_full", "ours at full load"), ("lat_half", "ours at half load")]
    lat_rows = [(c, label) for c, label in lat_rows if values(c, "p50_ms")]
    if lat_rows:
        out.append("")
        out.append("latency, paced open loop, to the webhook logged by the receiver; medians, (min..max):")
        out.append("  from due:    from the time the client's schedule set for the batch (its `sentAt`),")
        out.append("               so the client's own lateness counts too (late max: the most it was late)")
        out.append("  from ingest: from the moment the client handed the batch to its connection")
        header = ["load", "runs", "target ev/s", "sent ev/s", "delivered ev/s",
                  "p50 ms from due", "p99 ms from due", "p50 ms from ingest", "p99 ms from ingest",
                  "late max ms", "peak RSS MB"]
        table = [header]
        for c, label in lat_rows:
            late = med(c, "late_s_max")
            table.append([
                label,
                str(len(values(c, "p50_ms"))),
                fmt(med(c, "offered"), 0),
                fmt(med(c, "sent_rate"), 0),
                fmt(med(c, "rate"), 0),
                cell(c, "p50_ms", 1),
                cell(c, "p99_ms", 1),
                cell(c, "ingest_p50_ms", 2),
                cell(c, "ingest_p99_ms", 2),
                fmt(late * 1000.0 if late is not None else None, 0),
                fmt(med(c, "rss_mb"), 1),
            ])
        emit_table(out, table)

    out.append("")
    ours = med("ours", "rate")

    def ratio(a, b, label):
        if a is not None and b:
            out.append(f"{label:<38} {a / b:6.2f}")

    ratio(ours, med("ceiling", "rate"), "ours / ceiling (deliveries/s)")
    ratio(ours, med("hyper", "rate"), "ours / bare hyper loop (deliveries/s)")
    if ours is not None and med("hyper", "rate"):
        out[-1] += "   (target >= 0.80)"
    ratio(med("ours_procs", "rate"), med("hyper", "rate"), f"{args.procs} processes / bare hyper loop")
    ratio(med("ours", "cpu_us"), med("hyper", "cpu_us"), "ours / bare hyper loop (CPU per event)")
    ratio(ours, med("peer", "rate"), "ours / peer (deliveries/s)")
    ratio(med("ours", "cpu_us"), med("peer", "cpu_us"), "ours / peer (CPU per event)")
    ratio(med("ours_disk", "rate"), ours, "disk / memory buffer (deliveries/s)")
    if values("dead", "rss_mb"):
        out.append("")
        out.append(f"dead receiver: {fmt(med('dead', 'buffered'), 0)} events buffered in memory, every delivery refused:")
        out.append(f"  peak RSS {cell('dead', 'rss_mb', 1)} MB; raw JSON {fmt(med('dead', 'raw_mb'), 1)} MB;"
                   f" target <= 2 x raw + 20 = {fmt(med('dead', 'rss_limit_mb'), 1)} MB")
    lat_full = values("lat_full", "rate")
    if lat_full and values("lat_full", "offered"):
        kept = statistics.median(lat_full) / statistics.median(values("lat_full", "offered"))
        if kept < 0.97:
            out.append(f"note: at full load ours delivered {kept:.0%} of the target rate (the body-logging")
            out.append("      receiver and the paced client cost CPU too): the queue grew during the pass, so")
            out.append("      the full-load latency is mostly queueing time and grows with LAT_SECS.")
    out.extend(curve_tables(rows, args.conc))
    failures = [r for r in rows if r.get("error")]
    if failures:
        out.append("")
        out.append("FAILED RUNS:")
        for r in failures:
            out.append(f"  {r.get('config')} run {r.get('run')}: {r['error']}")
    print("\n".join(out))


TEMPLATE_ORDER = ["small", "typical", "standard", "large"]


def curve_tables(rows, conc):
    """The CURVE=1 sweep: throughput and CPU per event against the request concurrency
    (typical template), and against the template (at CONC). Cells: medians over
    CURVE_RUNS, with (min..max) when there is more than one."""
    def pick(config, **match):
        return [r for r in rows if r.get("config") == config and r.get("rate") is not None
                and all(r.get(k) == v for k, v in match.items())]

    def cell(rs, key, nd=0):
        v = [r[key] for r in rs if r.get(key) is not None]
        if not v:
            return "-"
        m = f"{statistics.median(v):,.{nd}f}"
        return m if len(v) == 1 else f"{m} ({min(v):,.{nd}f}..{max(v):,.{nd}f})"

    def ratio(a, b):
        va = [r["rate"] for r in a]
        vb = [r["rate"] for r in b]
        if not va or not vb:
            return "-"
        return f"{statistics.median(va) / statistics.median(vb):.2f}"

    out = []
    ours_all = [r for r in rows if r.get("config") == "curve_ours"]
    if not ours_all:
        return out
    concs = sorted({int(r["conc"]) for r in rows if r.get("config", "").startswith("curve_")
                    and r.get("conc") is not None and r.get("template", "typical") == "typical"})
    if concs:
        out.append("")
        out.append("sweep: concurrency (requests in flight), typical template; ours = memory buffer,")
        out.append("N_CURVE events pushed at once; hyper and wrk run for WRK_SECS; all counted at nginx")
        table = [["in flight", "ours deliveries/s", "ours CPU us/ev", "hyper req/s",
                  "hyper CPU us/req", "ours/hyper", "wrk req/s"]]
        for c in concs:
            ours = pick("curve_ours", conc=float(c), template="typical")
            hyper = pick("curve_hyper", conc=float(c), template="typical")
            wrk = pick("curve_wrk", conc=float(c))
            table.append([str(c), cell(ours, "rate"), cell(ours, "cpu_us", 1), cell(hyper, "rate"),
                          cell(hyper, "cpu_us", 1), ratio(ours, hyper), cell(wrk, "rate")])
        emit_table(out, table)
    templates = [t for t in TEMPLATE_ORDER if any(r.get("template") == t for r in ours_all)]
    if templates and conc is not None:
        out.append("")
        out.append(f"sweep: template (body size), {conc} in flight")
        table = [["template", "body bytes", "ours deliveries/s", "ours CPU us/ev", "hyper req/s",
                  "hyper CPU us/req", "ours/hyper"]]
        for t in templates:
            ours = pick("curve_ours", conc=float(conc), template=t)
            hyper = pick("curve_hyper", conc=float(conc), template=t)
            size = next((r.get("body_bytes") for r in ours_all if r.get("template") == t), None)
            table.append([t, f"{size:,.0f}" if size is not None else "-", cell(ours, "rate"),
                          cell(ours, "cpu_us", 1), cell(hyper, "rate"), cell(hyper, "cpu_us", 1),
                          ratio(ours, hyper)])
        emit_table(out, table)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("port").set_defaults(f=cmd_port)
    s = sub.add_parser("waitport")
    s.add_argument("port")
    s.add_argument("secs", nargs="?", default="10")
    s.set_defaults(f=cmd_waitport)
    s = sub.add_parser("health")
    s.add_argument("url")
    s.add_argument("secs", nargs="?", default="20")
    s.add_argument("pid", nargs="?", type=int)
    s.set_defaults(f=cmd_health)
    sub.add_parser("event").set_defaults(f=cmd_event)
    s = sub.add_parser("gen")
    s.add_argument("n")
    s.add_argument("file")
    s.set_defaults(f=cmd_gen)
    s = sub.add_parser("push")
    s.add_argument("--url", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--batch", type=int, default=200)
    s.add_argument("--conns", type=int, default=2)
    s.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as possible")
    s.add_argument("--timeout", type=float, default=300.0)
    s.add_argument("--sends", default="", help="write each batch's actual send time here (JSON)")
    s.set_defaults(f=cmd_push)
    s = sub.add_parser("proc")
    s.add_argument("pid", nargs="+")
    s.set_defaults(f=cmd_proc)
    s = sub.add_parser("wait")
    s.add_argument("log")
    s.add_argument("n")
    s.add_argument("--timeout", type=float, default=300.0)
    s.add_argument("--stall", type=float, default=20.0)
    s.add_argument("--pid", type=int)
    s.set_defaults(f=cmd_wait)
    s = sub.add_parser("count")
    s.add_argument("log")
    s.add_argument("latency", nargs="?", default="")
    s.add_argument("--sends", default="", help="push --sends output: also latency from each batch's send")
    s.set_defaults(f=cmd_count)
    s = sub.add_parser("record")
    s.add_argument("results")
    s.add_argument("--config", required=True)
    s.add_argument("--run", type=int, required=True)
    s.add_argument("--count", default="")
    s.add_argument("--push", default="")
    s.add_argument("--proc0", default="")
    s.add_argument("--proc1", default="")
    s.add_argument("--expect", type=int, default=0)
    s.add_argument("--error", default="")
    s.add_argument("--extra", action="append", default=[])
    s.add_argument("--client", default="", help="the hyper loop's JSON summary line")
    s.set_defaults(f=cmd_record)
    s = sub.add_parser("median")
    s.add_argument("results")
    s.add_argument("config")
    s.add_argument("key")
    s.set_defaults(f=cmd_median)
    s = sub.add_parser("report")
    s.add_argument("results")
    s.add_argument("--machine", default="")
    s.add_argument("--cmd", default="")
    s.add_argument("--settings", default="")
    s.add_argument("--note", default="")
    s.add_argument("--conc", type=int, help="CONC: the in-flight count of the template sweep")
    s.add_argument("--procs", type=int, default=2, help="PROCS: processes side by side in the ours_procs run")
    s.set_defaults(f=cmd_report)
    args = p.parse_args()
    sys.exit(args.f(args) or 0)


if __name__ == "__main__":
    main()
