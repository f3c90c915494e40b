"""Tests of the legacy-backend stand-in (stdlib unittest).

Run from the repository root:
    python3 -m unittest tests/standin/test_legacy_backend.py -v
"""

import hashlib
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND = os.path.join(HERE, "legacy_backend.py")

FLOW = ["init", "ai_fetching", "ranking_analysis", "source_tracing", "completed"]
STATUSES = {"pending", "running", "completed", "failed"}
STAGES = set(FLOW) | {"failed"}
TERMINAL = {"completed", "failed"}
RULES = ["completed_stage", "failed_stage", "completed_progress", "failed_progress",
         "terminal_not_marked"]
SPECIALS = ["oversize", "notjson", "malformed", "gzipbomb", "inconsistent"]
TIMESTAMPS = {"created_at", "updated_at", "generated_at", "timestamp"}
MAX_POLLS = 50


# --- a tiny checker of the sidecar's default rules ---------------------------

def broken_rules(r):
    """Names of the default rules (fixable and report-only) a record breaks."""
    st, sg, pr, ic = r.get("status"), r.get("stage"), r.get("progress"), r.get("is_completed")
    out = []
    if st == "completed" and sg != "completed":
        out.append("completed_stage")
    if st == "failed" and sg != "failed":
        out.append("failed_stage")
    if ic is True and st == "completed" and pr != 100:
        out.append("completed_progress")
    if ic is True and st == "failed" and pr != 0:
        out.append("failed_progress")
    if st in TERMINAL and ic is False:
        out.append("terminal_not_marked")
    # report-only defaults: an injected variant must not break these either
    if ic is True and st not in TERMINAL:
        out.append("running_marked_complete")
    if sg in TERMINAL and st not in TERMINAL:
        out.append("stage_ahead_of_status")
    if not isinstance(pr, (int, float)) or isinstance(pr, bool) or not 0 <= pr <= 100:
        out.append("progress_range")
    if st not in STATUSES or sg not in STAGES:
        out.append("unknown_value")
    if "status" not in r or "stage" not in r:
        out.append("missing_field")
    return out


FIXES = {
    "completed_stage": ("stage", "completed"),
    "failed_stage": ("stage", "failed"),
    "completed_progress": ("progress", 100),
    "failed_progress": ("progress", 0),
    "terminal_not_marked": ("is_completed", True),
}


def fix(r):
    r = dict(r)
    for rule in broken_rules(r):
        field, value = FIXES[rule]
        r[field] = value
    return r


def dumps(obj):
    return json.dumps(obj, sort_keys=True, ensure_ascii=True).encode("ascii")


def strip_times(obj):
    if isinstance(obj, dict):
        return {k: strip_times(v) for k, v in obj.items() if k not in TIMESTAMPS}
    if isinstance(obj, list):
        return [strip_times(v) for v in obj]
    return obj


# --- process and HTTP helpers -------------------------------------------------

class Standin:
    def __init__(self, *args):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, BACKEND, "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=self.err)
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline().decode() if ready else ""
        m = re.fullmatch(r"LISTENING (\d+)\n", line)
        if not m:
            self.stop()
            raise RuntimeError("stand-in did not start: %r" % line)
        self.port = int(m.group(1))
        self.conn = None

    def stop(self, sig=signal.SIGTERM):
        """Stop by pid; return (returncode, stderr text)."""
        if self.conn is not None:
            self.conn.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.err.seek(0)
        text = self.err.read().decode(errors="replace")
        self.err.close()
        return self.proc.returncode, text

    def request(self, method, path, body=None, headers=None):
        """Returns (status, headers dict lower-cased, raw body, decoded body)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, body=body, headers=hdrs)
        resp = self.conn.getresponse()
        raw = resp.read()
        h = {k.lower(): v for k, v in resp.getheaders()}
        enc = h.get("content-encoding", "identity")
        if enc == "gzip":
            dec = zlib.decompress(raw, 16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            dec = zlib.decompress(raw)
        else:
            dec = raw
        return resp.status, h, raw, dec

    def get_json(self, path, expect=200):
        status, h, raw, dec = self.request("GET", path)
        if status != expect:
            raise AssertionError("GET %s: %d %r" % (path, status, dec[:200]))
        return json.loads(dec), h

    def create(self, brand="Brand"):
        status, _, _, dec = self.request("POST", "/api/perform-brand-test", {
            "brand_list": [brand], "selectedModels": ["doubao", "qwen"],
            "customQuestions": ["\u4ecb\u7ecd\u4e00\u4e0b{brandName}"]})
        assert status == 200, dec
        body = json.loads(dec)
        assert body["status"] == "success"
        return body["execution_id"]

    def drive(self, tid, route="status"):
        """Poll until terminal; returns the list of (fixed) records seen."""
        seen = []
        for _ in range(MAX_POLLS):
            if route == "status":
                rec, _ = self.get_json("/test/status/" + tid)
            else:
                rec, _ = self.get_json("/api/test-progress?executionId=" + tid)
            rec = fix(rec)
            seen.append(rec)
            if rec["status"] in TERMINAL:
                return seen
        raise AssertionError("task %s not terminal after %d polls" % (tid, MAX_POLLS))

    def ledger(self):
        return self.get_json("/__ledger")[0]

    def reset(self):
        status, _, _, _ = self.request("POST", "/__reset")
        assert status == 200


def empty_ledger():
    return {"routes": {r: {"records": 0, "consistent": 0, "minor_issue": 0,
                           "rules": {k: 0 for k in RULES}}
                       for r in ("task_status", "test_progress", "test_history")},
            "specials": {k: 0 for k in SPECIALS}}


class Tally:
    """What the client saw, in the ledger's shape."""

    def __init__(self):
        self.ledger = empty_ledger()

    def add(self, route, rule):
        r = self.ledger["routes"][route]
        r["records"] += 1
        if rule is None:
            r["consistent"] += 1
        else:
            r["minor_issue"] += 1
            r["rules"][rule] += 1


def check_record(tc, route, served, headers, tally):
    """One served record (or history body): every record breaks at most one rule,
    it is the one the stand-in says it injected, and fixing restores the truth."""
    if route == "test_history":
        records = served["history"]
        tc.assertEqual(served["total"], len(records))
    else:
        records = [served]
    said = headers.get("x-standin-rules", "")
    said = said.split(",") if said else [""] * len(records)
    tc.assertEqual(len(said), len(records))
    fixed = []
    for rec, rule in zip(records, said):
        broken = broken_rules(rec)
        if rule:
            tc.assertEqual(broken, [rule], rec)
            tc.assertIn(rec["status"], TERMINAL)
        else:
            tc.assertEqual(broken, [], rec)
        tally.add(route, rule or None)
        fixed.append(fix(rec))
    truth = {"history": fixed, "total": len(fixed)} if route == "test_history" else fixed[0]
    tc.assertEqual(hashlib.sha256(dumps(truth)).hexdigest(),
                     headers["x-standin-true-sha256"])
    return records


class StandinCase(unittest.TestCase):
    ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.s = Standin(*cls.ARGS)

    @classmethod
    def tearDownClass(cls):
        rc, err = cls.s.stop()
        assert rc == 0, rc
        assert err == "", "stand-in wrote to stderr: %r" % err[:500]

    def check_record(self, route, served, headers, tally):
        return check_record(self, route, served, headers, tally)


# --- the seed's integration flow ---------------------------------------------

class SeedFlowTest(StandinCase):

    def test_health_and_api_test(self):
        body, h = self.s.get_json("/health")
        self.assertEqual(body["status"], "healthy")
        self.assertEqual(h["content-type"], "application/json")
        body, _ = self.s.get_json("/api/test")
        self.assertEqual(body, {"message": "Backend is working", "status": "success"})

    def test_seed_flow_completes(self):
        tid = self.s.create("Brand")
        self.s.get_json("/api/deep-intelligence/" + tid, expect=400)
        stages = []
        for _ in range(MAX_POLLS):
            status, h, raw, dec = self.s.request("GET", "/test/status/" + tid)
            self.assertEqual(status, 200)
            self.assertEqual(h["content-type"], "application/json")
            self.assertEqual(int(h["content-length"]), len(raw))
            self.assertTrue(350 <= len(raw) <= 700, len(raw))
            self.assertIn(b"\\u54c1\\u724c", raw)  # non-ASCII, escaped
            rec = json.loads(dec)
            self.assertEqual(broken_rules(rec), [])
            self.assertEqual(rec["task_id"], tid)
            self.assertEqual(rec["detail"]["status"], "ok")
            # the seed's step 5: status/stage/is_completed agree at every poll
            self.assertEqual(rec["is_completed"], rec["status"] in TERMINAL)
            if rec["status"] == "completed":
                self.assertEqual((rec["stage"], rec["progress"]), ("completed", 100))
            stages.append((rec["status"], rec["stage"], rec["progress"]))
            if rec["is_completed"]:
                break
        self.assertEqual(stages, [("pending", "init", 0), ("running", "ai_fetching", 25),
                                  ("running", "ranking_analysis", 50),
                                  ("running", "source_tracing", 75),
                                  ("completed", "completed", 100)])
        body, _ = self.s.get_json("/api/deep-intelligence/" + tid)
        self.assertEqual(body["status"], "success")
        self.assertEqual(body["data"]["task_id"], tid)
        self.s.get_json("/api/deep-intelligence/nope", expect=404)

    def test_failing_brand(self):
        tid = self.s.create("failBrand")
        seen = [(r["status"], r["stage"], r["progress"], r["is_completed"])
                for r in self.s.drive(tid)]
        self.assertEqual(seen, [("pending", "init", 0, False), ("running", "ai_fetching", 25, False),
                                ("running", "ranking_analysis", 50, False),
                                ("failed", "failed", 0, True)])
        self.s.get_json("/api/deep-intelligence/" + tid, expect=400)

    def test_failure_scenario_400(self):
        before = self.s.ledger()
        for body in ({}, {"brand_list": []}, {"brand_list": [""]}, {"brand_list": "Brand"},
                     b"{not json", b"[1,2]"):
            status, h, _, dec = self.s.request("POST", "/api/perform-brand-test", body,
                                               {"Content-Type": "application/json"})
            self.assertEqual(status, 400, body)
            self.assertIn("error", json.loads(dec))
        self.s.get_json("/test/status/unknown-id", expect=404)
        self.s.get_json("/api/test-progress?executionId=unknown-id", expect=404)
        self.s.get_json("/api/test-progress", expect=400)
        self.assertEqual(self.s.ledger(), before)

    def test_progress_route(self):
        tid = self.s.create("Brand")
        seen = self.s.drive(tid, route="progress")
        self.assertEqual([r["stage"] for r in seen], FLOW)
        for r in seen:
            self.assertEqual(r["execution_id"], tid)
            self.assertNotIn("task_id", r)

    def test_history_and_ledger(self):
        self.s.reset()
        ids = [self.s.create("Brand%d" % i) for i in range(3)]
        self.s.drive(ids[0])
        body, h = self.s.get_json("/api/test-history")
        self.assertLessEqual(body["total"], 20)
        self.assertEqual(body["total"], len(body["history"]))
        self.assertEqual([r["task_id"] for r in body["history"][:3]], ids[::-1])  # newest first
        for r in body["history"]:
            self.assertEqual(broken_rules(r), [])
        led = self.s.ledger()
        self.assertEqual(led["routes"]["task_status"]["records"], 5)
        self.assertEqual(led["routes"]["task_status"]["consistent"], 5)
        self.assertEqual(led["routes"]["test_history"]["records"], body["total"])
        self.assertEqual(led["routes"]["test_history"]["consistent"], body["total"])
        self.s.reset()
        self.assertEqual(self.s.ledger(), empty_ledger())

    def test_history_caps_at_20(self):
        for i in range(22):
            self.s.create("B%d" % i)
        body, _ = self.s.get_json("/api/test-history")
        self.assertEqual(body["total"], 20)


class PollsPerStageTest(StandinCase):
    ARGS = ("--polls-per-stage", "3")

    def test_three_polls_per_stage(self):
        tid = self.s.create("Brand")
        stages = [r["stage"] for r in self.s.drive(tid)]
        self.assertEqual(stages, [s for s in FLOW[:-1] for _ in range(3)] + ["completed"])
        # progress polls count too
        tid = self.s.create("Brand")
        self.s.get_json("/test/status/" + tid)
        self.s.get_json("/api/test-progress?executionId=" + tid)
        rec, _ = self.s.get_json("/test/status/" + tid)
        self.assertEqual(rec["stage"], "init")
        rec, _ = self.s.get_json("/test/status/" + tid)
        self.assertEqual(rec["stage"], "ai_fetching")


# --- injection and ledger -------------------------------------------------------

class InjectAllTest(StandinCase):
    ARGS = ("--inject-rate", "1.0", "--seed", "7")

    def test_every_terminal_record_is_injected_and_counted(self):
        self.s.reset()
        tally = Tally()
        ids = [self.s.create(b) for b in ("Alpha", "failBeta", "\u54c1\u724c", "Gamma-fail")]
        # working records are never injected
        for tid in ids:
            for _ in range(MAX_POLLS):
                rec, h = self.s.get_json("/test/status/" + tid)
                self.check_record("task_status", rec, h, tally)
                if fix(rec)["status"] in TERMINAL:
                    self.assertNotEqual(h["x-standin-rules"], "")
                    break
                self.assertEqual(h["x-standin-rules"], "")
        self.assertEqual(self.s.ledger(), tally.ledger)

        # finished tasks: every record is injected
        self.s.reset()
        tally = Tally()
        for _ in range(8):
            for tid in ids:
                rec, h = self.s.get_json("/test/status/" + tid)
                self.check_record("task_status", rec, h, tally)
                rec, h = self.s.get_json("/api/test-progress?executionId=" + tid)
                self.check_record("test_progress", rec, h, tally)
            body, h = self.s.get_json("/api/test-history")
            self.check_record("test_history", body, h, tally)
        led = self.s.ledger()
        self.assertEqual(led, tally.ledger)
        for route, counts in led["routes"].items():
            self.assertGreater(counts["records"], 0, route)
            self.assertEqual(counts["minor_issue"], counts["records"], route)
            self.assertEqual(counts["consistent"], 0, route)
            self.assertEqual(sum(counts["rules"].values()), counts["records"], route)
        used = {k for c in led["routes"].values() for k, n in c["rules"].items() if n}
        self.assertEqual(used, set(RULES))

    def test_inconsistent_special(self):
        self.s.reset()
        for _ in range(3):
            rec, h = self.s.get_json("/test/status/__inconsistent")
            self.assertEqual(broken_rules(rec), ["completed_stage"])
            self.assertEqual(h["x-standin-rules"], "completed_stage")
            self.assertEqual(hashlib.sha256(dumps(fix(rec))).hexdigest(),
                             h["x-standin-true-sha256"])
        led = self.s.ledger()
        expect = empty_ledger()
        expect["specials"]["inconsistent"] = 3
        self.assertEqual(led, expect)


class MixedRateTest(StandinCase):
    ARGS = ("--inject-rate", "0.3", "--seed", "11")

    def run_sequence(self, s):
        tally = Tally()
        rules = []
        ids = [s.create(b) for b in ("A", "failB", "C")]
        for _ in range(12):
            for tid in ids:
                rec, h = s.get_json("/test/status/" + tid)
                self.check_record("task_status", rec, h, tally)
                rules.append(h["x-standin-rules"])
                rec, h = s.get_json("/api/test-progress?executionId=" + tid)
                self.check_record("test_progress", rec, h, tally)
                rules.append(h["x-standin-rules"])
            body, h = s.get_json("/api/test-history")
            self.check_record("test_history", body, h, tally)
            rules.append(h["x-standin-rules"])
        return tally, rules

    def test_ledger_matches_client_view_and_is_deterministic(self):
        self.s.reset()
        tally, rules = self.run_sequence(self.s)
        led = self.s.ledger()
        self.assertEqual(led, tally.ledger)
        total = sum(r["records"] for r in led["routes"].values())
        minor = sum(r["minor_issue"] for r in led["routes"].values())
        self.assertTrue(0 < minor < total, (minor, total))
        other = Standin(*self.ARGS)
        try:
            _, rules2 = self.run_sequence(other)
        finally:
            rc, err = other.stop()
        self.assertEqual((rc, err), (0, ""))
        self.assertEqual(rules, rules2)  # same seed, same requests -> same injections


# --- encodings and framing ----------------------------------------------------------

class EncodingTest(unittest.TestCase):

    def sample(self, args):
        """Same requests against a fresh stand-in; returns decoded bodies and raw facts."""
        s = Standin("--inject-rate", "0.5", "--seed", "3", *args)
        out = []
        try:
            tally = Tally()
            ids = [s.create(b) for b in ("Brand", "failBrand")]
            paths = []
            for _ in range(6):
                for tid in ids:
                    paths += [("task_status", "/test/status/" + tid),
                              ("test_progress", "/api/test-progress?executionId=" + tid)]
            paths += [("test_history", "/api/test-history"), (None, "/test/status/nope"),
                      (None, "/health")]
            for route, path in paths:
                status, h, raw, dec = s.request("GET", path)
                if route:
                    self.assertEqual(status, 200)
                    check_record(self, route, json.loads(dec), h, tally)
                out.append((path, status, h, raw, json.loads(dec)))
            self.assertEqual(s.ledger(), tally.ledger)
        finally:
            rc, err = s.stop()
        self.assertEqual((rc, err), (0, ""))
        return out

    def test_encodings_decode_to_the_same_json(self):
        plain = self.sample(())
        for _, _, h, raw, _ in plain:
            self.assertNotIn("content-encoding", h)
            self.assertEqual(int(h["content-length"]), len(raw))
        for args, enc, chunked in ((("--encoding", "gzip"), "gzip", False),
                                   (("--encoding", "deflate"), "deflate", False),
                                   (("--chunked",), None, True),
                                   (("--encoding", "gzip", "--chunked"), "gzip", True),
                                   (("--encoding", "deflate", "--chunked"), "deflate", True)):
            with self.subTest(args=args):
                got = self.sample(args)
                self.assertEqual(len(got), len(plain))
                for (path, st, h, raw, body), (_, st0, _, _, body0) in zip(got, plain):
                    self.assertEqual(st, st0, path)
                    self.assertEqual(strip_times(body), strip_times(body0), path)
                    inspected = not path.startswith("/health")
                    if enc and inspected:
                        self.assertEqual(h.get("content-encoding"), enc, path)
                    else:
                        self.assertNotIn("content-encoding", h, path)
                    if chunked:
                        self.assertEqual(h.get("transfer-encoding"), "chunked")
                        self.assertNotIn("content-length", h)
                    else:
                        self.assertEqual(int(h["content-length"]), len(raw))

    def test_raw_chunked_framing_keeps_alive(self):
        s = Standin("--chunked", "--encoding", "gzip")
        try:
            tid = s.create("Brand")
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            f = sock.makefile("rb")
            try:
                for _ in range(3):  # three requests on one connection
                    sock.sendall(("GET /test/status/%s HTTP/1.1\r\nHost: x\r\n"
                                  "Accept-Encoding: identity\r\n\r\n" % tid).encode())
                    self.assertTrue(f.readline().startswith(b"HTTP/1.1 200"))
                    headers = {}
                    while True:
                        line = f.readline()
                        if line == b"\r\n":
                            break
                        k, v = line.decode().split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                    self.assertEqual(headers["transfer-encoding"], "chunked")
                    body, n_chunks = b"", 0
                    for _ in range(10000):
                        size = int(f.readline().strip(), 16)
                        if size == 0:
                            self.assertEqual(f.readline(), b"\r\n")  # no trailers
                            break
                        body += f.read(size)
                        self.assertEqual(f.read(2), b"\r\n")
                        n_chunks += 1
                    else:
                        self.fail("no terminating chunk")
                    self.assertGreater(n_chunks, 1)
                    rec = json.loads(zlib.decompress(body, 16 + zlib.MAX_WBITS))
                    self.assertEqual(rec["task_id"], tid)
            finally:
                f.close()
                sock.close()
        finally:
            rc, err = s.stop()
        self.assertEqual((rc, err), (0, ""))


# --- special bodies ---------------------------------------------------------------------

class SpecialsTest(StandinCase):
    ARGS = ("--inject-rate", "1.0", "--encoding", "gzip")

    def test_specials(self):
        self.s.reset()
        st, h, raw, dec = self.s.request("GET", "/test/status/__oversize")
        self.assertEqual(st, 200)
        self.assertEqual(h["content-type"], "application/json")
        self.assertGreaterEqual(len(raw), 2 * 1024 * 1024)
        self.assertLess(len(raw), 2 * 1024 * 1024 + 1024)
        self.assertEqual(broken_rules(json.loads(dec)), [])

        st, h, raw, _ = self.s.request("GET", "/test/status/__notjson")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/html"))
        self.assertIn(b"<html>", raw)

        st, h, raw, dec = self.s.request("GET", "/test/status/__malformed")
        self.assertEqual(st, 200)
        self.assertEqual(h["content-type"], "application/json")
        with self.assertRaises(ValueError):
            json.loads(dec)

        for _ in range(2):  # built once, served twice
            self.s.conn.request("GET", "/test/status/__gzipbomb")
            resp = self.s.conn.getresponse()
            raw = resp.read()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.getheader("Content-Encoding"), "gzip")
            self.assertEqual(resp.getheader("Content-Type"), "application/json")
            self.assertLess(len(raw), 256 * 1024)
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            total, head, tail, buf = 0, b"", b"", raw
            for _ in range(100000):  # bounded inflate, 1 MiB at a time, never kept
                piece = d.decompress(buf, 1 << 20)
                buf = d.unconsumed_tail
                if not head:
                    head = piece[:40]
                total += len(piece)
                tail = (tail + piece)[-120:]
                if not buf and not piece:
                    break
            self.assertTrue(d.eof)
            self.assertEqual(total, 64 * 1024 * 1024)
            self.assertTrue(head.startswith(b'{"is_completed": true, "padding": "000'))
            self.assertTrue(tail.endswith(b'"task_id": "__gzipbomb"}'))

        self.s.get_json("/test/status/__nope", expect=404)
        expect = empty_ledger()
        expect["specials"].update(oversize=1, notjson=1, malformed=1, gzipbomb=2)
        self.assertEqual(self.s.ledger(), expect)


# --- lifecycle ----------------------------------------------------------------------------

class LifecycleTest(unittest.TestCase):

    def test_signals_exit_cleanly_with_open_connection(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(sig=sig):
                s = Standin()
                s.get_json("/health")  # leaves a keep-alive connection open
                sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
                try:
                    t0 = time.monotonic()
                    s.proc.send_signal(sig)
                    s.proc.wait(timeout=10)
                    self.assertLess(time.monotonic() - t0, 5)
                finally:
                    sock.close()
                rc, err = s.stop()
                self.assertEqual((rc, err), (0, ""))


if __name__ == "__main__":
    unittest.main()
