"""An HTTP server that records what it receives (a real peer for http_out tests).

Usage: http_sink.py --log FILE [--fail-first N] [--reject TEXT] [--port P]

Binds 127.0.0.1 (port P, or a free one), prints "listening PORT" on stdout,
then answers every POST: 503 for the first N requests, 400 when the body
contains TEXT, else 200 — appending one JSON line per accepted request to
FILE: {"path", "body", "headers"}.
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--reject", default=None)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    lock = threading.Lock()
    state = {"seen": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _answer(self, code):
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n).decode("utf-8", "replace")
            with lock:
                state["seen"] += 1
                seen = state["seen"]
            if seen <= args.fail_first:
                return self._answer(503)
            if args.reject and args.reject in body:
                return self._answer(400)
            with lock, open(args.log, "a") as f:
                f.write(json.dumps({"path": self.path, "body": body, "headers": {k.lower(): v for k, v in self.headers.items()}}) + "\n")
            self._answer(200)

        do_PUT = do_POST

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
