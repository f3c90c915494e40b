#!/usr/bin/env python3
"""A small HTTP/1.1 upstream for the proxy tests, standard library only.

Listens on 127.0.0.1 with an OS-chosen port; the first stdout line is "LISTENING <port>". Routes:
  /plain           1000 bytes with Content-Length
  /chunked         300000 bytes sent with chunked encoding, uneven chunk sizes
  /big             10 MiB sent chunked in 64 KiB chunks
  /head            Content-Length 1000 (no body for HEAD)
  /no-content      204
  /not-modified    304 with ETag
  /repeated        three Set-Cookie and two X-Multi lines
  /upload          reads the body (Content-Length or chunked), answers "<len> <sha256>"
  /echo            the request line and headers as JSON
  /slow?ms=N       answers after N ms
  /die             promises 1000000 bytes, sends 100 KiB, closes
  /die-chunked     sends chunks for 100 KiB, closes without the last chunk
"""
import hashlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def pattern(n, start=0):
    """Deterministic position-dependent bytes (same formula as the Rust tests)."""
    return bytes(
        (((i ^ (i >> 7) ^ (i >> 17)) * 31) & 0xFF) for i in range(start, start + n)
    )


PLAIN = pattern(1000)
_BIG = []


def big():
    """The 10 MiB pattern, built once (generating it per request is slow in Python)."""
    if not _BIG:
        _BIG.append(pattern(10 * 1024 * 1024))
    return _BIG[0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echo-upstream/1"

    def log_message(self, *args):
        pass

    def send_chunk(self, data):
        self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

    def end_chunks(self):
        self.wfile.write(b"0\r\n\r\n")

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(length)

    def handle_any(self):
        url = urlsplit(self.path)
        path = url.path
        head = self.command == "HEAD"
        if path == "/plain":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(PLAIN)))
            self.end_headers()
            if not head:
                self.wfile.write(PLAIN)
        elif path in ("/chunked", "/big"):
            total, sizes = (300000, [1, 4093, 65536, 7]) if path == "/chunked" else (10 * 1024 * 1024, [65536])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            source = big()
            sent, k = 0, 0
            while sent < total:
                n = min(sizes[k % len(sizes)], total - sent)
                self.send_chunk(source[sent : sent + n])
                sent += n
                k += 1
            self.end_chunks()
        elif path == "/head":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(PLAIN)))
            self.end_headers()
            if not head:
                self.wfile.write(PLAIN)
        elif path == "/no-content":
            self.send_response(204)
            self.send_header("X-Kind", "204")
            self.end_headers()
        elif path == "/not-modified":
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.send_header("Cache-Control", "max-age=60")
            self.end_headers()
        elif path == "/repeated":
            body = b"ok"
            self.send_response(200)
            self.send_header("Set-Cookie", "a=1; Path=/")
            self.send_header("X-Multi", "first")
            self.send_header("Set-Cookie", "b=2; HttpOnly")
            self.send_header("X-Multi", "second")
            self.send_header("Set-Cookie", "c=3")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/upload":
            data = self.read_body()
            body = ("%d %s" % (len(data), hashlib.sha256(data).hexdigest())).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/echo":
            self.read_body()
            body = json.dumps(
                {
                    "method": self.command,
                    "target": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["1000"])[0])
            time.sleep(ms / 1000.0)
            body = b"slow but done"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/die":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(pattern(100 * 1024))
            self.wfile.flush()
            self.close_connection = True
        elif path == "/die-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.send_chunk(pattern(100 * 1024))
            self.wfile.flush()
            self.close_connection = True
        else:
            body = b"not found"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    server = Server(("127.0.0.1", 0), Handler)
    print("LISTENING %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
