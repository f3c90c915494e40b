#!/usr/bin/env python3
"""Stand-in of the legacy Flask "brand diagnosis" backend (Python 3 stdlib only).

It serves the endpoints the sidecar sits in front of, advances tasks
deterministically (one stage every --polls-per-stage polls), injects
inconsistent task records at a known rate on the inspected routes, and keeps a
ledger of every record it served and every inconsistency it injected so tests
can compare the sidecar's metrics against it.

Usage:
  python3 tests/standin/legacy_backend.py [--host 127.0.0.1] [--port 0]
      [--inject-rate 0.0] [--seed 1]
      [--encoding identity|gzip|deflate|br|zstd|negotiate] [--chunked] [--polls-per-stage 1]

--encoding negotiate answers each inspected request in the coding its Accept-Encoding prefers,
as Flask-Compress 1.25 does (zstd, br, gzip, deflate on equal weights). br and zstd need
Debian's python3-brotli and python3-zstandard; every other mode is standard library only.

The first stdout line is exactly ``LISTENING <port>``.

Inspected routes (ledger names):
  task_status    GET /test/status/{task_id}      record: the whole body
  test_progress  GET /api/test-progress?executionId=  record: the whole body
  test_history   GET /api/test-history            records: /history/*

Test hooks:
  GET  /__ledger   ledger JSON (see ``Ledger.snapshot``)
  GET  /__poller   a page whose fetch() creates tasks and polls each until it ends, as the
                   front end does; it keeps every answer in ``window.seen``
  POST /__reset    zero the ledger
  GET  /test/status/__oversize | __notjson | __malformed | __gzipbomb | __inconsistent
       | __brbomb | __zstdbomb

Every response on an inspected route carries
  X-Standin-Rules: the injected rule per record, in record order ("" if none)
  X-Standin-True-Sha256: sha256 of the body as it would be without injection
    (uncompressed).  A correct byte-preserving fix of the served body yields
    exactly these bytes.
"""

import argparse
import datetime
import hashlib
import json
import random
import signal
import socket
import sys
import threading
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ROUTES = ("task_status", "test_progress", "test_history")
RULES = (
    "completed_stage",
    "failed_stage",
    "completed_progress",
    "failed_progress",
    "terminal_not_marked",
)
SPECIALS = ("oversize", "notjson", "malformed", "gzipbomb", "inconsistent", "brbomb", "zstdbomb")
CODINGS = ("identity", "gzip", "deflate", "br", "zstd")
# Flask-Compress 1.25's COMPRESS_ALGORITHM: its order among codings a client weighs equally.
NEGOTIATE_ORDER = ("zstd", "br", "gzip", "deflate")

# Stage flow of a successful task; a failing task falls to "failed" after FAIL_AT.
FLOW = ("init", "ai_fetching", "ranking_analysis", "source_tracing", "completed")
PROGRESS = {"init": 0, "ai_fetching": 25, "ranking_analysis": 50, "source_tracing": 75, "completed": 100}
FAIL_AT = "ranking_analysis"
DEFAULT_MODELS = ["doubao", "deepseek", "qwen"]
HISTORY_LIMIT = 20

OVERSIZE_BYTES = 2 * 1024 * 1024
GZIPBOMB_INFLATED_BYTES = 64 * 1024 * 1024
CODEC_BOMB_INFLATED_BYTES = 32 * 1024 * 1024

TERMINAL_VARIANTS = {
    "completed": ("completed_stage", "completed_progress", "terminal_not_marked"),
    "failed": ("failed_stage", "failed_progress", "terminal_not_marked"),
}


def dumps(obj):
    """Serialize like Flask's jsonify of the era: sorted keys, ASCII escapes."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=True).encode("ascii")


# The front end's polling loop, for a real browser: every answer is kept as
# [task id, Content-Encoding, body text] in window.seen; window.done is set at the end.
POLLER_PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>poller</title><link rel="icon" href="data:,">
<script>
window.seen = []; window.done = false; window.failure = null;
async function pollTask(n) {
  const brand = (n % 4 === 3 ? "fail-brand-" : "brand-") + n;
  const created = await (await fetch("/api/perform-brand-test", {
    method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({brand_list: [brand], selectedModels: ["m"]})})).json();
  const id = created.execution_id;
  for (let i = 0; i < 50; i++) {
    const answer = await fetch("/test/status/" + id, {cache: "no-store"});
    const text = await answer.text();
    window.seen.push([id, answer.headers.get("content-encoding") || "identity", text]);
    const status = JSON.parse(text).status;
    if (status === "completed" || status === "failed") return;
  }
}
(async () => {
  const tasks = Number(new URLSearchParams(location.search).get("tasks") || "12");
  try { for (let n = 0; n < tasks; n++) await pollTask(n); }
  catch (e) { window.failure = String(e); }
  window.done = true;
})();
</script>
"""


def codec(name):
    """The module behind br or zstd, imported only when a run uses it."""
    if name == "br":
        import brotli
        return brotli
    import zstandard
    return zstandard


def compress(body, coding):
    if coding == "gzip":
        c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip container
        return c.compress(body) + c.flush()
    if coding == "deflate":
        return zlib.compress(body, 6)  # zlib stream (HTTP "deflate")
    if coding == "br":
        return codec("br").compress(body, quality=4)  # Flask-Compress's default level
    if coding == "zstd":
        return codec("zstd").ZstdCompressor(level=3).compress(body)
    return body


def accepted_codings(values):
    """Accept-Encoding lines -> {coding: weight}, '*' included (RFC 9110 section 12.5.3)."""
    weights = {}
    for value in values:
        for element in value.split(","):
            parts = [p.strip() for p in element.split(";")]
            if not parts[0]:
                continue
            weight = 1.0
            for param in parts[1:]:
                if param.lower().startswith("q="):
                    try:
                        weight = float(param[2:])
                    except ValueError:
                        weight = 0.0
            weights[parts[0].lower()] = weight
    return weights


def negotiate(values):
    """The coding Flask-Compress would answer in, or "identity"."""
    if not values:
        return "identity"
    weights = accepted_codings(values)
    best, best_weight = "identity", 0.0
    for coding in NEGOTIATE_ORDER:
        weight = weights.get(coding, weights.get("*", 0.0))
        if weight > best_weight:
            best, best_weight = coding, weight
    return best


def now_iso():
    return datetime.datetime.now().replace(microsecond=0).isoformat()


def inject(record, rule):
    """Return a copy of a terminal record that breaks exactly `rule`.

    Fixing that rule (stage:=completed / stage:=failed / progress:=100 /
    progress:=0 / is_completed:=true) restores the record exactly.
    """
    bad = dict(record)
    if rule == "completed_stage":
        assert record["status"] == "completed"
        bad["stage"] = "source_tracing"
    elif rule == "failed_stage":
        assert record["status"] == "failed"
        bad["stage"] = FAIL_AT
    elif rule == "completed_progress":
        assert record["status"] == "completed" and record["is_completed"] is True
        bad["progress"] = 90
    elif rule == "failed_progress":
        assert record["status"] == "failed" and record["is_completed"] is True
        bad["progress"] = 50
    elif rule == "terminal_not_marked":
        assert record["status"] in ("completed", "failed")
        bad["is_completed"] = False
    else:
        raise ValueError(rule)
    return bad


class Task:
    def __init__(self, task_id, brands, models, questions):
        self.task_id = task_id
        self.brands = brands
        self.models = models
        self.questions = questions
        self.fails = any("fail" in b.lower() for b in brands)
        self.stage_index = 0  # index into FLOW while working
        self.failed = False
        self.polls = 0
        self.created_at = now_iso()
        self.updated_at = self.created_at

    # --- state -----------------------------------------------------------
    @property
    def stage(self):
        return "failed" if self.failed else FLOW[self.stage_index]

    @property
    def status(self):
        if self.failed:
            return "failed"
        stage = FLOW[self.stage_index]
        if stage == "init":
            return "pending"
        if stage == "completed":
            return "completed"
        return "running"

    @property
    def progress(self):
        return 0 if self.failed else PROGRESS[FLOW[self.stage_index]]

    @property
    def terminal(self):
        return self.status in ("completed", "failed")

    def poll(self, polls_per_stage):
        """Count one status/progress poll; advance after every N polls."""
        if self.terminal:
            return
        self.polls += 1
        if self.polls % polls_per_stage:
            return
        if self.fails and FLOW[self.stage_index] == FAIL_AT:
            self.failed = True
        else:
            self.stage_index += 1
        self.updated_at = now_iso()

    # --- records -----------------------------------------------------------
    def _results(self):
        done = 0 if self.failed else max(0, self.stage_index - 1)
        brand = self.brands[0]
        out = []
        for i, model in enumerate(self.models[: min(done, 2)]):
            out.append({"model": model, "brand": brand, "rank": i + 1,
                        "sentiment": "\u6b63\u9762"})  # 正面
        return out

    def _detail(self):
        # Nested fields named like the top-level ones, on purpose: an inspector
        # must only look at the record's top-level keys.
        d = {
            "status": "ok",
            "stage": self.stage,
            "progress": self.progress,
            "is_completed": self.terminal,
            "brand_name": self.brands[0],
            "competitors": ["\u54c1\u724cB", "\u54c1\u724cC"],  # 品牌B 品牌C
        }
        if self.failed:
            d["error_stage"] = FAIL_AT
        return d

    def status_record(self):
        rec = {
            "task_id": self.task_id,
            "status": self.status,
            "stage": self.stage,
            "progress": self.progress,
            "is_completed": self.terminal,
            "results": self._results(),
            "detail": self._detail(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "models": self.models,
        }
        if self.failed:
            rec["error"] = "\u6392\u540d\u5206\u6790\u5931\u8d25: ranking analysis failed"  # 排名分析失败
        return rec

    def progress_record(self):
        rec = {
            "execution_id": self.task_id,
            "status": self.status,
            "stage": self.stage,
            "progress": self.progress,
            "is_completed": self.terminal,
            "results": self._results(),
            "detail": self._detail(),
            "updated_at": self.updated_at,
        }
        if self.failed:
            rec["error"] = "\u6392\u540d\u5206\u6790\u5931\u8d25: ranking analysis failed"
        return rec

    def deep_intelligence(self):
        brand = self.brands[0]
        return {
            "status": "success",
            "data": {
                "task_id": self.task_id,
                "brand_name": brand,
                "exposure_analysis": {"ranking_list": [brand, "\u54c1\u724cB", "\u54c1\u724cC"],
                                      "brand_details": {brand: {"rank": 1, "sov_share": 0.42}}},
                "source_intelligence": {"source_pool": [{"site": "zhihu.com", "citations": 3}]},
                "evidence_chain": [{"model": m, "claim": "\u63a8\u8350" + brand} for m in self.models],
                "competitive_analysis": {"competitors": ["\u54c1\u724cB", "\u54c1\u724cC"]},
                "generated_at": self.updated_at,
            },
        }


class Ledger:
    def __init__(self):
        self.reset()

    def reset(self):
        self.routes = {
            r: {"records": 0, "consistent": 0, "minor_issue": 0, "rules": {k: 0 for k in RULES}}
            for r in ROUTES
        }
        self.specials = {k: 0 for k in SPECIALS}
        self.codings = {k: 0 for k in CODINGS}
        self.accept_encodings = set()  # each distinct Accept-Encoding an inspected request had
        # route -> rule -> the task ids it was injected into
        self.injected = {r: {k: set() for k in RULES} for r in ROUTES}

    def count(self, route, rule, task_id=None):
        if rule is not None and task_id is not None:
            self.injected[route][rule].add(task_id)
        r = self.routes[route]
        r["records"] += 1
        if rule is None:
            r["consistent"] += 1
        else:
            r["minor_issue"] += 1
            r["rules"][rule] += 1

    def snapshot(self):
        return {"routes": json.loads(json.dumps(self.routes)), "specials": dict(self.specials),
                "codings": dict(self.codings), "accept_encodings": sorted(self.accept_encodings),
                "injected_tasks": {r: {k: sorted(ids) for k, ids in rules.items()}
                                   for r, rules in self.injected.items()}}


class Backend:
    def __init__(self, inject_rate, seed, encoding, chunked, polls_per_stage):
        self.inject_rate = inject_rate
        self.rng = random.Random(seed)
        self.id_rng = random.Random(seed * 7919 + 17)
        self.encoding = encoding
        self.chunked = chunked
        self.polls_per_stage = polls_per_stage
        self.lock = threading.Lock()
        self.tasks = {}
        self.order = []  # task ids in creation order
        self.ledger = Ledger()
        self._bomb = None
        self._codec_bombs = {}
        self._bomb_lock = threading.Lock()
        self._oversize = None

    # Caller holds self.lock.
    def _maybe_inject(self, route, record):
        """Return (served_record, rule_or_None) and count it in the ledger."""
        rule = None
        if record["status"] in TERMINAL_VARIANTS and self.inject_rate > 0:
            if self.rng.random() < self.inject_rate:
                rule = self.rng.choice(TERMINAL_VARIANTS[record["status"]])
        self.ledger.count(route, rule, record.get("task_id"))
        return (inject(record, rule) if rule else record), rule

    def new_id(self):
        return str(uuid.UUID(int=self.id_rng.getrandbits(128), version=4))

    def create(self, brands, models, questions):
        with self.lock:
            tid = self.new_id()
            while tid in self.tasks:
                tid = self.new_id()
            self.tasks[tid] = Task(tid, brands, models, questions)
            self.order.append(tid)
            return tid

    def gzipbomb(self):
        with self._bomb_lock:
            if self._bomb is None:
                head = b'{"is_completed": true, "padding": "'
                tail = b'", "progress": 100, "stage": "completed", "status": "completed", "task_id": "__gzipbomb"}'
                pad = GZIPBOMB_INFLATED_BYTES - len(head) - len(tail)
                comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
                parts = [comp.compress(head)]
                block = b"0" * (1 << 20)
                while pad > 0:
                    n = min(pad, len(block))
                    parts.append(comp.compress(block[:n]))
                    pad -= n
                parts.append(comp.compress(tail))
                parts.append(comp.flush())
                self._bomb = b"".join(parts)
            return self._bomb

    def codec_bomb(self, coding):
        """A br or zstd body that inflates to CODEC_BOMB_INFLATED_BYTES."""
        with self._bomb_lock:
            if coding not in self._codec_bombs:
                head = b'{"is_completed": true, "padding": "'
                tail = b'", "progress": 100, "stage": "completed", "status": "completed"}'
                pad = b"0" * (CODEC_BOMB_INFLATED_BYTES - len(head) - len(tail))
                self._codec_bombs[coding] = compress(head + pad + tail, coding)
            return self._codec_bombs[coding]

    def oversize(self):
        with self._bomb_lock:
            if self._oversize is None:
                rec = {
                    "task_id": "__oversize", "status": "completed", "stage": "completed",
                    "progress": 100, "is_completed": True, "results": [], "padding": "",
                }
                base = len(dumps(rec))
                rec["padding"] = "x" * (OVERSIZE_BYTES - base)
                self._oversize = dumps(rec)
            return self._oversize


def make_handler(backend):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "legacy-backend-standin/1.0"

        # Buffer writes so status line, headers and body leave in one segment
        # (flushed at the end of each response), and don't wait on Nagle.
        wbufsize = 64 * 1024

        def setup(self):
            super().setup()
            try:
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

        def version_string(self):
            return self.server_version

        def log_message(self, fmt, *args):  # quiet
            pass

        # --- plumbing -------------------------------------------------------
        def _read_body(self):
            te = (self.headers.get("Transfer-Encoding") or "").lower()
            if "chunked" in te:
                chunks = []
                while True:
                    line = self.rfile.readline(65537)
                    if not line:
                        break
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while True:  # trailers
                            t = self.rfile.readline(65537)
                            if t in (b"\r\n", b"\n", b""):
                                break
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline(65537)
                return b"".join(chunks)
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n > 0 else b""

        def _send(self, code, body, ctype="application/json", encoding=None, extra=None,
                  precompressed=None):
            """Send a response; `encoding` compresses body, `precompressed` names the
            Content-Encoding of an already-encoded body."""
            headers = [("Content-Type", ctype)]
            if precompressed:
                headers.append(("Content-Encoding", precompressed))
            elif encoding and encoding != "identity":
                body = compress(body, encoding)
                headers.append(("Content-Encoding", encoding))
                headers.append(("Vary", "Accept-Encoding"))
            for h in extra or ():
                headers.append(h)
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            head_only = self.command == "HEAD"
            if backend.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if head_only:
                    return
                size = min(8192, max(1, len(body) // 3 + 1))
                out = []
                for i in range(0, len(body), size):
                    piece = body[i:i + size]
                    out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
                    if len(out) >= 64:
                        self.wfile.write(b"".join(out))
                        out = []
                out.append(b"0\r\n\r\n")
                self.wfile.write(b"".join(out))
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head_only:
                    self.wfile.write(body)
            self.wfile.flush()

        def _json(self, code, obj, inspected=False, extra=None):
            enc = None
            if inspected:
                enc = backend.encoding
                if enc == "negotiate":
                    enc = negotiate(self.headers.get_all("Accept-Encoding") or [])
                if self.command != "HEAD":
                    accept = ", ".join(self.headers.get_all("Accept-Encoding") or ["-"])
                    with backend.lock:
                        backend.ledger.codings[enc or "identity"] += 1
                        backend.ledger.accept_encodings.add(accept)
            self._send(code, dumps(obj), encoding=enc, extra=extra)

        def _records(self, code, served, real, rules, extra_headers=None):
            """Send an inspected-route body with the test headers."""
            extra = [
                ("X-Standin-Rules", ",".join(r or "" for r in rules) if any(rules) else ""),
                ("X-Standin-True-Sha256", hashlib.sha256(dumps(real)).hexdigest()),
            ]
            self._json(code, served, inspected=True, extra=extra + (extra_headers or []))

        # --- dispatch -------------------------------------------------------
        def do_GET(self):
            self._dispatch("GET")

        def do_HEAD(self):
            self._dispatch("HEAD")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        def do_DELETE(self):
            self._dispatch("DELETE")

        def _dispatch(self, method):
            try:
                body = self._read_body()
            except (ValueError, OSError):
                self.close_connection = True
                self._send(400, dumps({"error": "bad request body"}))
                return
            url = urlsplit(self.path)
            path = url.path
            query = parse_qs(url.query)
            get = method in ("GET", "HEAD")
            if path.startswith("/test/status/"):
                if not get:
                    return self._json(405, {"error": "Method not allowed"}, inspected=True)
                return self.task_status(path[len("/test/status/"):])
            if path == "/api/test-progress":
                if not get:
                    return self._json(405, {"error": "Method not allowed"}, inspected=True)
                return self.test_progress(query)
            if path == "/api/test-history":
                if not get:
                    return self._json(405, {"error": "Method not allowed"}, inspected=True)
                return self.test_history()
            if path == "/health" and get:
                return self._json(200, {"status": "healthy", "version": "1.0.0",
                                        "service": "brand-diagnosis-backend", "timestamp": now_iso()})
            if path == "/api/test" and get:
                return self._json(200, {"message": "Backend is working", "status": "success"})
            if path == "/api/perform-brand-test":
                if method != "POST":
                    return self._json(405, {"error": "Method not allowed"})
                return self.perform_brand_test(body)
            if path.startswith("/api/deep-intelligence/") and get:
                return self.deep_intelligence(path[len("/api/deep-intelligence/"):])
            if path == "/__poller" and get:
                return self._send(200, POLLER_PAGE, ctype="text/html; charset=utf-8")
            if path == "/__ledger" and get:
                with backend.lock:
                    snap = backend.ledger.snapshot()
                return self._json(200, snap)
            if path == "/__reset" and method == "POST":
                with backend.lock:
                    backend.ledger.reset()
                return self._json(200, {"status": "reset"})
            return self._json(404, {"error": "Not found", "path": path})

        # --- endpoints ------------------------------------------------------
        def perform_brand_test(self, body):
            try:
                data = json.loads(body.decode("utf-8")) if body else None
            except (ValueError, UnicodeDecodeError):
                return self._json(400, {"error": "Invalid JSON in request body"})
            if not isinstance(data, dict):
                return self._json(400, {"error": "Request body must be a JSON object"})
            brands = data.get("brand_list")
            if not isinstance(brands, list) or not brands or not all(
                    isinstance(b, str) and b.strip() for b in brands):
                return self._json(400, {"error": "brand_list is required and must be a non-empty list"})
            models = data.get("selectedModels") or DEFAULT_MODELS
            models = [m["name"] if isinstance(m, dict) and "name" in m else str(m) for m in models]
            questions = data.get("customQuestions") or []
            tid = backend.create([b.strip() for b in brands], models, questions)
            return self._json(200, {"status": "success", "execution_id": tid,
                                    "message": "Brand test started", "brand_list": brands,
                                    "selected_models": models})

        def task_status(self, tid):
            if tid.startswith("__"):
                return self.special(tid[2:])
            if self.command == "HEAD":  # not a record: don't advance or count
                return self._json(200 if tid in backend.tasks else 404, {}, inspected=True)
            with backend.lock:
                task = backend.tasks.get(tid)
                if task is None:
                    served = None
                else:
                    real = task.status_record()
                    served, rule = backend._maybe_inject("task_status", real)
                    task.poll(backend.polls_per_stage)
            if served is None:
                return self._json(404, {"error": "Task not found", "task_id": tid}, inspected=True)
            return self._records(200, served, real, [rule])

        def test_progress(self, query):
            tid = (query.get("executionId") or query.get("execution_id") or [""])[0]
            if not tid:
                return self._json(400, {"error": "executionId is required"}, inspected=True)
            if self.command == "HEAD":
                return self._json(200 if tid in backend.tasks else 404, {}, inspected=True)
            with backend.lock:
                task = backend.tasks.get(tid)
                if task is None:
                    served = None
                else:
                    real = task.progress_record()
                    served, rule = backend._maybe_inject("test_progress", real)
                    task.poll(backend.polls_per_stage)
            if served is None:
                return self._json(404, {"error": "Execution not found", "execution_id": tid},
                                  inspected=True)
            return self._records(200, served, real, [rule])

        def test_history(self):
            if self.command == "HEAD":
                return self._json(200, {}, inspected=True)
            with backend.lock:
                ids = list(reversed(backend.order[-HISTORY_LIMIT:]))  # newest first
                reals, served, rules = [], [], []
                for tid in ids:
                    real = backend.tasks[tid].status_record()
                    s, rule = backend._maybe_inject("test_history", real)
                    reals.append(real)
                    served.append(s)
                    rules.append(rule)
            return self._records(200, {"history": served, "total": len(served)},
                                 {"history": reals, "total": len(reals)}, rules)

        def deep_intelligence(self, tid):
            with backend.lock:
                task = backend.tasks.get(tid)
                if task is None:
                    resp = (404, {"error": "Task not found", "task_id": tid})
                elif task.status != "completed":
                    resp = (400, {"error": "Task not completed", "task_id": tid,
                                  "status": task.status})
                else:
                    resp = (200, task.deep_intelligence())
            return self._json(*resp)

        def special(self, name):
            if name not in SPECIALS:
                return self._json(404, {"error": "Task not found", "task_id": "__" + name},
                                  inspected=True)
            if self.command != "HEAD":
                with backend.lock:
                    backend.ledger.specials[name] += 1
            if name == "oversize":
                return self._send(200, backend.oversize())
            if name == "notjson":
                return self._send(200, b"<!DOCTYPE html>\n<html><head><title>Diagnosis</title></head>"
                                       b"<body><p>status: completed</p></body></html>\n",
                                  ctype="text/html; charset=utf-8")
            if name == "malformed":
                rec = dumps({"task_id": "__malformed", "status": "completed", "stage": "completed",
                             "progress": 100, "is_completed": True, "results": []})
                return self._send(200, rec[: len(rec) * 2 // 3])
            if name == "gzipbomb":
                return self._send(200, backend.gzipbomb(), precompressed="gzip")
            if name in ("brbomb", "zstdbomb"):
                coding = name[: -len("bomb")]
                return self._send(200, backend.codec_bomb(coding), precompressed=coding)
            # inconsistent: always the completed_stage variant of a completed record
            real = {"task_id": "__inconsistent", "status": "completed", "stage": "completed",
                    "progress": 100, "is_completed": True, "results": [],
                    "detail": {"status": "ok", "stage": "completed", "brand_name": "\u54c1\u724c"}}
            return self._records(200, inject(real, "completed_stage"), real, ["completed_stage"])

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--inject-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--encoding", choices=CODINGS + ("negotiate",), default="identity")
    p.add_argument("--chunked", action="store_true")
    p.add_argument("--polls-per-stage", type=int, default=1)
    a = p.parse_args(argv)
    if not 0.0 <= a.inject_rate <= 1.0:
        p.error("--inject-rate must be within 0..1")
    if a.polls_per_stage < 1:
        p.error("--polls-per-stage must be >= 1")

    for coding in ("br", "zstd"):
        if a.encoding in (coding, "negotiate"):
            try:
                codec(coding)
            except ImportError as err:
                p.error("--encoding %s needs %s (Debian: python3-brotli, python3-zstandard)"
                        % (a.encoding, err.name))

    backend = Backend(a.inject_rate, a.seed, a.encoding, a.chunked, a.polls_per_stage)
    server = Server((a.host, a.port), make_handler(backend))

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write("LISTENING %d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
