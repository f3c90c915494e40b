#!/usr/bin/env python3
"""Load generator and judge of benches/soak.sh (Python 3 stdlib only).

Many virtual users, each on its own keep-alive connection to the sidecar, run the seed's
polling flow over and over: create a task (POST /api/perform-brand-test), poll
/test/status/{id} and /api/test-progress alternately until the task is finished, poll the
finished task a few more times (as front ends do; the stand-in injects only into finished
records), fetch /api/deep-intelligence/{id} of a completed task, and read /api/test-history
every tenth task. No new task starts once the request budget is spent.

Every answer must be a 200 and every record a client sees must be consistent (fix mode), with
progress never moving back within a task. At the end the sidecar's counters must equal the
stand-in's ledger exactly, its request counter must equal the requests sent, and its RSS at the
end must be within 10% of its RSS after the first checkpoint (100,000 requests by default).
Prints the figures and PASS or FAIL; the exit status is 0 only on PASS.

Usage: soak_client.py --proxy HOST:PORT --admin HOST:PORT --standin HOST:PORT
           --sidecar-pid PID [--requests 1000000] [--users 16] [--checkpoint 100000]
           [--max-seconds 3600]
"""

import argparse
import asyncio
import json
import re
import sys
import time

ROUTES = ("task_status", "test_progress", "test_history")
RULES = ("completed_stage", "failed_stage", "completed_progress", "failed_progress",
         "terminal_not_marked")
EXTRA_TERMINAL_POLLS = 3
HISTORY_EVERY = 10


def broken(record):
    """The rules a record a client sees still breaks (the seed's checks, fix mode's promise)."""
    out = []
    status, stage = record.get("status"), record.get("stage")
    progress, done = record.get("progress"), record.get("is_completed")
    if status == "completed" and stage != "completed":
        out.append("completed_stage")
    if status == "failed" and stage != "failed":
        out.append("failed_stage")
    if done is True and status == "completed" and progress != 100:
        out.append("completed_progress")
    if done is True and status == "failed" and progress != 0:
        out.append("failed_progress")
    if status in ("completed", "failed") and done is False:
        out.append("terminal_not_marked")
    return out


class Failure(Exception):
    pass


class Run:
    """Counters shared by the virtual users (one event loop: no locks needed)."""

    def __init__(self, args):
        self.args = args
        self.sent = 0
        self.by_path = {}
        self.failures = []
        self.tasks = 0
        self.rss = []  # (requests, kB)
        self.next_checkpoint = args.checkpoint
        self.started = time.monotonic()

    def count(self, kind):
        self.sent += 1
        self.by_path[kind] = self.by_path.get(kind, 0) + 1
        if self.sent >= self.next_checkpoint:
            self.rss.append((self.sent, rss_kb(self.args.sidecar_pid)))
            rate = self.sent / (time.monotonic() - self.started)
            print(f"soak: {self.sent:>9,} requests, {rate:,.0f} req/s, sidecar RSS "
                  f"{self.rss[-1][1] / 1024:.1f} MiB", file=sys.stderr, flush=True)
            self.next_checkpoint += self.args.checkpoint

    def fail(self, what):
        if len(self.failures) < 1000:
            self.failures.append(what)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Failure(f"no VmRSS for pid {pid}")


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects if the server closes it."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method, path, body=b""):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", ""):
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            data = b"".join(parts)
        else:
            raise Failure(f"{method} {path}: response without a length")
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, data

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None


async def user(run, n):
    host, port = run.args.proxy.rsplit(":", 1)
    conn = Connection(host, int(port))
    task_no = n
    try:
        while run.sent < run.args.requests and not run.failures:
            await flow(run, conn, task_no)
            task_no += run.args.users
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
            KeyError, TypeError, Failure) as e:
        run.fail(f"user {n}: {type(e).__name__}: {e}")
    finally:
        conn.close()


async def get_json(run, conn, kind, path):
    status, data = await conn.request("GET", path)
    run.count(kind)
    if status != 200:
        raise Failure(f"GET {path}: {status} {data[:200]!r}")
    return json.loads(data)


async def flow(run, conn, task_no):
    """One task's life, as the seed's front end drives it."""
    brand = f"fail-brand-{task_no}" if task_no % 4 == 3 else f"brand-{task_no}"
    body = json.dumps({"brand_list": [brand], "selectedModels": ["doubao", "qwen"]}).encode()
    status, data = await conn.request("POST", "/api/perform-brand-test", body)
    run.count("create")
    if status != 200:
        raise Failure(f"create: {status} {data[:200]!r}")
    tid = json.loads(data)["execution_id"]
    run.tasks += 1
    last_progress = 0
    extra = 0
    polls = 0
    final = None
    while extra <= EXTRA_TERMINAL_POLLS:
        if polls % 2 == 0:
            record = await get_json(run, conn, "status", f"/test/status/{tid}")
        else:
            record = await get_json(run, conn, "progress", f"/api/test-progress?executionId={tid}")
        polls += 1
        wrong = broken(record)
        if wrong:
            raise Failure(f"task {tid}: the client saw {wrong}: {record}")
        if record.get("status") != "failed" and record["progress"] < last_progress:
            raise Failure(f"task {tid}: progress moved back {last_progress} -> {record}")
        last_progress = record["progress"]
        if record.get("is_completed") is True:
            final = record["status"]
            extra += 1
        if polls > 40:
            raise Failure(f"task {tid} never finished: {record}")
    if final == "completed":
        result = await get_json(run, conn, "deep_intelligence", f"/api/deep-intelligence/{tid}")
        if not isinstance(result.get("data"), dict):
            raise Failure(f"deep intelligence of {tid}: {result}")
    if task_no % HISTORY_EVERY == 0:
        history = await get_json(run, conn, "history", "/api/test-history")
        for record in history["history"]:
            wrong = broken(record)
            if wrong:
                raise Failure(f"history: the client saw {wrong}: {record}")


async def fetch(hostport, path):
    host, port = hostport.rsplit(":", 1)
    conn = Connection(host, int(port))
    try:
        status, data = await conn.request("GET", path)
    finally:
        conn.close()
    if status != 200:
        raise Failure(f"GET {hostport}{path}: {status}")
    return data.decode()


SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> {name: [(labels, value)]}."""
    out = {}
    for line in text.splitlines():
        m = SERIES.match(line)
        if m:
            labels = dict(LABEL.findall(m.group(2) or ""))
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def total(metrics, name, **want):
    return sum(v for labels, v in metrics.get(name, [])
               if all(labels.get(k) == w for k, w in want.items()))


def compare(metrics, ledger, sent):
    """Mismatches between the sidecar's counters and the ledger (and the requests sent)."""
    bad = []

    def expect(what, got, want):
        if got != want:
            bad.append(f"{what}: sidecar {got:g}, expected {want:g}")

    injected_total = 0
    for route in ROUTES:
        entry = ledger["routes"][route]
        expect(f"{route} checks", total(metrics, "consistency_checks_total", route=route),
               entry["records"])
        for level in ("consistent", "minor_issue"):
            expect(f"{route} {level}", total(metrics, "consistency_results_total", route=route,
                                             level=level), entry[level])
        for level in ("major_issue", "critical"):
            expect(f"{route} {level}", total(metrics, "consistency_results_total", route=route,
                                             level=level), 0)
        for rule in RULES:
            injected = entry["rules"][rule]
            injected_total += injected
            expect(f"{route} issues {rule}", total(metrics, "consistency_issues_total",
                                                   route=route, rule=rule), injected)
            expect(f"{route} fixes {rule}", total(metrics, "consistency_fixes_total",
                                                  route=route, rule=rule), injected)
    expect("issues, all rules", total(metrics, "consistency_issues_total"), injected_total)
    expect("fixes, all rules", total(metrics, "consistency_fixes_total"), injected_total)
    expect("requests counted", total(metrics, "consistency_proxy_requests_total"), sent)
    expect("2xx counted", total(metrics, "consistency_proxy_requests_total", code="2xx"), sent)
    expect("upstream errors", total(metrics, "consistency_proxy_upstream_errors_total"), 0)
    expect("load shed", total(metrics, "consistency_proxy_load_shed_total"), 0)
    expect("skipped inspections", total(metrics, "consistency_skipped_total"), 0)
    return bad, injected_total


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--proxy", required=True)
    p.add_argument("--admin", required=True)
    p.add_argument("--standin", required=True)
    p.add_argument("--sidecar-pid", type=int, required=True)
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--checkpoint", type=int, default=100_000)
    p.add_argument("--max-seconds", type=float, default=3600)
    p.add_argument("--probe-requests", type=int, default=0,
                   help="requests sent through the sidecar before this client started")
    a = p.parse_args()
    for hostport in (a.proxy, a.admin, a.standin):
        if not hostport.startswith("127.0.0.1:"):
            p.error(f"{hostport}: loopback only")

    run = Run(a)
    users = asyncio.gather(*(user(run, n) for n in range(a.users)))
    try:
        await asyncio.wait_for(users, a.max_seconds)
    except asyncio.TimeoutError:
        run.fail(f"not done within --max-seconds {a.max_seconds:g}")
    elapsed = time.monotonic() - run.started
    end_rss = rss_kb(a.sidecar_pid)
    ledger = json.loads(await fetch(a.standin, "/__ledger"))
    metrics = parse_metrics(await fetch(a.admin, "/metrics"))

    mismatches, injected = compare(metrics, ledger, run.sent + a.probe_requests)
    records = sum(ledger["routes"][r]["records"] for r in ROUTES)
    # Without a checkpoint before the end there is nothing to compare: that fails below.
    first = run.rss[0] if run.rss else (run.sent, end_rss)
    growth = (end_rss - first[1]) / first[1]

    print(f"requests:   {run.sent:,} in {elapsed:.0f} s ({run.sent / elapsed:,.0f} req/s), "
          f"{a.users} keep-alive users, {run.tasks:,} tasks")
    print("by kind:    " + ", ".join(f"{k} {v:,}" for k, v in sorted(run.by_path.items())))
    print(f"ledger:     {records:,} records inspected, {injected:,} inconsistencies injected; "
          f"sidecar fixes {total(metrics, 'consistency_fixes_total'):,.0f}, "
          f"tracked tasks {total(metrics, 'consistency_tracked_tasks'):,.0f}, "
          f"evictions {total(metrics, 'consistency_tracker_evictions_total'):,.0f}")
    print("RSS (MiB):  " + ", ".join(f"{n // 1000:,}k {kb / 1024:.1f}" for n, kb in run.rss)
          + f"; end {end_rss / 1024:.1f}")
    print(f"RSS growth: {growth * 100:+.1f}% from {first[0]:,} requests to the end "
          f"({first[1] / 1024:.1f} -> {end_rss / 1024:.1f} MiB; limit +-10%)")
    checks = [
        (run.sent >= a.requests, f"{run.sent:,} requests sent (at least {a.requests:,})"),
        (not run.failures, f"{len(run.failures)} failed requests or inconsistent answers"),
        (not mismatches, "counters equal the ledger and the requests sent"),
        (bool(run.rss) and abs(growth) <= 0.10,
         f"RSS at the end within 10% of RSS at {first[0]:,} requests"),
    ]
    for failure in run.failures[:10]:
        print(f"  failure: {failure[:300]}")
    for mismatch in mismatches:
        print(f"  mismatch: {mismatch}")
    for ok, what in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    passed = all(ok for ok, _ in checks)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
