#!/usr/bin/env python3
"""A small webhook receiver for the demo: verifies both signatures with nothing but the Python
standard library, prints each delivery, and answers 200 (or 401 when a signature is wrong).

    demo_receiver.py --port 28816 --secret /acme/policies=whsec_... [--secret PATH=SECRET ...]
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def beema_ok(body: bytes, secret: str, header: str) -> bool:
    want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, header or "")


def standard_ok(body: bytes, secret: str, msg_id: str, ts: str, header: str) -> bool:
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    signed = f"{msg_id}.{ts}.".encode() + body
    want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(want, part[3:]) for part in (header or "").split() if part.startswith("v1,"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", action="append", default=[], help="PATH=SECRET")
    args = ap.parse_args()
    secrets = dict(s.split("=", 1) for s in args.secret)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            secret = secrets.get(self.path, "")
            ok1 = beema_ok(body, secret, self.headers.get("X-Beema-Signature"))
            ok2 = standard_ok(body, secret, self.headers.get("webhook-id", ""),
                              self.headers.get("webhook-timestamp", ""), self.headers.get("webhook-signature"))
            event = json.loads(body)
            verdict = "signatures OK" if ok1 and ok2 else f"BAD SIGNATURE (beema={ok1}, standard={ok2})"
            print(f"  receiver {self.path:<20} {event['event']:<18} tenant={event['data'].get('tenantId')}"
                  f"  id={self.headers.get('webhook-id')}  {verdict}", flush=True)
            status = 200 if ok1 and ok2 else 401
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_):
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
