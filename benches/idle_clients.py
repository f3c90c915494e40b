"""Idle keep-alive clients for benches/idle_rss.sh: opens connections to 127.0.0.1:PORT in
batches, sends one GET on each and reads its answer, then leaves them idle. At each level of
LEVELS it writes DIR/at-N and waits for DIR/go-N (the script measures meanwhile); after the
last level it closes every connection and writes DIR/closed.

python3 idle_clients.py PORT DIR 1000,5000,15000
"""

import os
import socket
import sys
import time

BATCH = 200
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle-rss\r\n\r\n"


def wait_for(path, limit=600):
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"idle_clients: no {path} within {limit}s")
        time.sleep(0.05)


def answered(sock):
    """Reads until a whole head arrived (the bodies here are a few bytes, in the same read)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        data += chunk
    return True


def main():
    port, work, levels = int(sys.argv[1]), sys.argv[2], [int(n) for n in sys.argv[3].split(",")]
    open_socks, failed = [], 0
    for level in levels:
        while len(open_socks) < level:
            batch = []
            for _ in range(min(BATCH, level - len(open_socks))):
                s = socket.socket()
                s.settimeout(10)
                s.connect(("127.0.0.1", port))
                s.sendall(REQUEST)
                batch.append(s)
            for s in batch:
                try:
                    ok = answered(s)
                except OSError:
                    ok = False
                if not ok:
                    failed += 1
                open_socks.append(s)
        with open(os.path.join(work, f"at-{level}"), "w") as f:
            f.write(f"{failed}\n")
        wait_for(os.path.join(work, f"go-{level}"))
    for s in open_socks:
        s.close()
    with open(os.path.join(work, "closed"), "w") as f:
        f.write(f"{failed}\n")


if __name__ == "__main__":
    main()
