#!/usr/bin/env python3
"""Alert-storm scenario of the load benchmark (python3 standard library only).

A storm of EVENTS events over ALERTS alerts goes into webhook-sink's `http_server` source,
all at once. Each sink posts to a loopback receiver that, like a chat tool's incoming
webhook, takes RATE requests per second per path and answers the rest `429` with
`Retry-After: 1`. Every scenario is its own webhook-sink process with its own config:

  plain          one webhook per event, no rate limit: what a naive sender does
  rate_limited   one webhook per event, `request.rate_limit_*` a tenth under RATE per second
  digests        + `batch = { max_events = DIGEST, timeout_secs = 1 }`
  digests_dedupe + `dedupe.window_secs = 600`

Each alert's events are: created, then REPEATS re-notifications of the same created
event (same body, as Alertmanager's `repeat_interval` or Nagios re-sends them), then
resolved. Per scenario the receiver counts the requests, the 429s, and the events that
arrived (array bodies counted item by item), checks each alert's order (no resolve before
its create) and the time from the storm's start until the last event arrived. A scenario
that cannot finish within CAP seconds (one webhook per event at RATE per second takes
EVENTS / RATE seconds) is stopped there; its time is then projected from its delivery rate,
and what was still waiting is reported as waiting (it was in the buffer, not lost).
"Lost" counts events neither delivered, nor waiting, nor dropped as duplicates: those
dead-lettered, from webhook-sink's /metrics.

Usage: python3 bench/storm.py [--events 10000] [--alerts 500] [--rate 1] [--digest 500]
                              [--cap 60] [--scenarios plain,rate_limited,digests,digests_dedupe]
                              [--bin target/debug/webhook-sink] [--log FILE_%s] [--markdown FILE]
"""

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A loopback receiver taking `rate` requests per second per path (a token bucket with
    a burst of one), answering the rest 429 + `Retry-After: 1`."""

    def __init__(self, rate):
        self.rate = rate
        self.lock = threading.Lock()
        self.tokens = {}
        self.requests = 0
        self.too_many = 0
        self.events = []  # (arrival time, event)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                allowed = receiver.take(self.path)
                if allowed:
                    items = json.loads(body)
                    items = items if isinstance(items, list) else [items]
                    now = time.monotonic()
                    with receiver.lock:
                        receiver.events.extend((now, item) for item in items)
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                else:
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "4")
                    self.end_headers()
                    self.wfile.write(b"slow")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, path):
        now = time.monotonic()
        with self.lock:
            self.requests += 1
            tokens, last = self.tokens.get(path, (1.0, now))
            tokens = min(1.0, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self.tokens[path] = (tokens - 1.0, now)
                return True
            self.tokens[path] = (tokens, now)
            self.too_many += 1
            return False

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def storm(events, alerts):
    """The storm, in sending order: round by round over the alerts."""
    per_alert = max(events // alerts, 2)
    lines = []
    for r in range(per_alert):
        for a in range(alerts):
            if r == per_alert - 1:
                etype, status = "alert-resolved", "RESOLVED"
            else:
                etype, status = "alert-created", "PENDING"
            lines.append(
                json.dumps(
                    {
                        "id": "storm-%d" % a,
                        "eventType": etype,
                        "status": status,
                        "priority": "HIGH",
                        "summary": "host%d.example.com is DOWN" % a,
                        "alertKey": "storm-%d" % a,
                        "reportTime": "2026-12-03T10:00:00Z",
                        "alertSource": {"id": 1, "name": "storm"},
                    }
                )
            )
    return lines


# The rate limit is set a tenth under the receiver's (10 requests per 11 s for 1 per second),
# as the README advises: at exactly the receiver's rate, timing jitter gets some refused.
LIMIT = "request.rate_limit_num = {rate}\nrequest.rate_limit_duration_secs = 11\n"
SCENARIOS = {
    "plain": "",
    "rate_limited": LIMIT,
    "digests": LIMIT + "batch = {{ max_events = {digest}, timeout_secs = 1 }}\n",
    "digests_dedupe": LIMIT + "batch = {{ max_events = {digest}, timeout_secs = 1 }}\ndedupe.window_secs = 600\n",
}


def rate_num(rate):
    """`request.rate_limit_num` per 11 s for a receiver taking `rate` requests per second."""
    return max(int(rate * 10), 1)


def config(data_dir, source_port, api_port, receiver_port, settings, events):
    return (
        "data_dir = '%s'\n[api]\naddress = \"127.0.0.1:%d\"\n\n"
        "[sources.alerts]\ntype = \"http_server\"\naddress = \"127.0.0.1:%d\"\n\n"
        "[sinks.chat]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"http://127.0.0.1:%d/chat\"\n"
        "buffer.max_events = %d\nbuffer.max_bytes = 268435456\n%s"
        % (data_dir, api_port, source_port, receiver_port, events * 2, settings)
    )


def post(port, lines, batch=500):
    for i in range(0, len(lines), batch):
        body = ("\n".join(lines[i : i + batch]) + "\n").encode()
        for _ in range(100):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/", body, {"Content-Type": "application/x-ndjson"})
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                break
            time.sleep(0.1)
        else:
            raise SystemExit("the source kept refusing the storm (status %d)" % status)


def metric(api_port, name, **labels):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", api_port, timeout=5)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all('%s="%s"' % kv in line for kv in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_port(port, proc, secs=20):
    """Whether webhook-sink listens on `port` within `secs` (false at once if it exited)."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def run(name, args, lines, expected_unique):
    receiver = Receiver(args.rate)
    source_port, api_port = free_port(), free_port()
    settings = SCENARIOS[name].format(rate=rate_num(args.rate), digest=args.digest)
    with tempfile.TemporaryDirectory() as data:
        path = os.path.join(data, "storm.toml")
        with open(path, "w") as f:
            f.write(config(data, source_port, api_port, receiver.port, settings, len(lines)))
        log = open(args.log % name, "w") if args.log else subprocess.DEVNULL
        proc = subprocess.Popen(
            [args.bin, "run", "--config", path], stderr=log, stdout=subprocess.DEVNULL, text=True
        )
        try:
            if not wait_port(source_port, proc):
                raise SystemExit("webhook-sink did not start for scenario %s (exit %s); see --log" % (name, proc.poll()))
            start = time.monotonic()
            post(source_port, lines)
            expected = expected_unique if name == "digests_dedupe" else len(lines)
            deadline = start + args.cap
            while time.monotonic() < deadline and len(receiver.events) < expected:
                time.sleep(0.2)
            stopped = time.monotonic()
            deduplicated = metric(api_port, "webhook_sink_events_deduplicated_total", sink="chat") or 0
            dead = metric(api_port, "webhook_sink_events_dead_lettered_total", sink="chat") or 0
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            receiver.stop()
    with receiver.lock:
        arrived = list(receiver.events)
    order_ok = True
    created_seen = set()
    for _, event in arrived:
        key = event.get("alertKey")
        if event.get("eventType") == "alert-created":
            created_seen.add(key)
        elif key not in created_seen:
            order_ok = False
    done = len(arrived) >= expected
    last = max((t for t, _ in arrived), default=start)
    if done:
        seconds = last - start
        projected = False
    else:
        rate = len(arrived) / max(stopped - start, 1e-9)
        seconds = len(lines) / rate if rate > 0 else float("inf")
        projected = True
    waiting = max(len(lines) - len(arrived) - int(deduplicated) - int(dead), 0)
    return {
        "scenario": name,
        "requests": receiver.requests,
        "too_many": receiver.too_many,
        "share": receiver.too_many / max(receiver.requests, 1),
        "delivered": len(arrived),
        "deduplicated": int(deduplicated),
        "lost": int(dead),
        "waiting": waiting,
        "seconds": seconds,
        "projected": projected,
        "order_ok": order_ok,
    }


def table(results, args):
    out = [
        "Storm: %d events over %d alerts, receiver limited to %s request/s per sink (429 + Retry-After: 1)."
        % (args.events, args.alerts, args.rate),
        "",
        "| scenario | requests sent | 429s received | share | events delivered | dropped as duplicates "
        "| dead-lettered | time until the last event arrived | per-alert order |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        time_text = ("~%.0f s (projected; stopped after %d s, %d still waiting)" % (r["seconds"], args.cap, r["waiting"])
                     if r["projected"] else "%.1f s" % r["seconds"])
        out.append(
            "| %s | %d | %d | %.1f%% | %d | %d | %d | %s | %s |"
            % (r["scenario"], r["requests"], r["too_many"], 100 * r["share"], r["delivered"], r["deduplicated"],
               r["lost"], time_text, "kept" if r["order_ok"] else "BROKEN")
        )
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--alerts", type=int, default=500)
    parser.add_argument("--rate", type=float, default=1)
    parser.add_argument("--digest", type=int, default=500)
    parser.add_argument("--cap", type=int, default=60)
    parser.add_argument("--scenarios", default="plain,rate_limited,digests,digests_dedupe")
    # The debug build by default: at RATE requests per second the CPU is not what limits.
    parser.add_argument("--bin", default=os.environ.get("BIN", "target/debug/webhook-sink"))
    parser.add_argument("--markdown")
    parser.add_argument("--log", help="write each scenario's webhook-sink log to this path, %%s = scenario")
    args = parser.parse_args()
    lines = storm(args.events, args.alerts)
    unique = 2 * args.alerts  # one created and one resolved per alert
    results = []
    for name in args.scenarios.split(","):
        result = run(name, args, lines, unique)
        print(json.dumps(result), file=sys.stderr)
        results.append(result)
    text = table(results, args)
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
