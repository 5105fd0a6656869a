"""A payment service of the sample's own: HTTP on loopback, charges deduplicated by key.

It is what a real payment API (Stripe's ``Idempotency-Key`` header, for one) does for its
clients: the first ``POST /charge`` under a key charges and records a receipt; any later request
under the same key gets that receipt again and charges nothing. ``GET /charges`` lists what was
charged and how many requests came in, which is how the sample shows "exactly once".

    python samples/charge/service.py [--port N]     # prints "listening on http://127.0.0.1:N"
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Ledger:
    """Charges by idempotency key, and a count of every request (retries included)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.charges: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.requests_by_key: dict[str, int] = {}

    def charge(self, key: str, order: str, amount: int) -> tuple[dict[str, Any], bool]:
        """The receipt for ``key``, and whether this request charged (False: a repeat)."""
        with self.lock:
            self.requests += 1
            self.requests_by_key[key] = self.requests_by_key.get(key, 0) + 1
            known = self.charges.get(key)
            if known is not None:
                return known, False
            receipt = {"receipt": f"r-{len(self.charges) + 1}", "order": order, "amount": amount}
            self.charges[key] = receipt
            return receipt, True


def handler_for(ledger: Ledger) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            key = self.headers.get("Idempotency-Key", "")
            length = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(length))
                order, amount = str(body["order"]), int(body["amount"])
            except (ValueError, KeyError, TypeError):
                self._reply(400, {"error": "expected JSON {order, amount}"})
                return
            if self.path != "/charge" or not key:
                self._reply(400, {"error": "POST /charge with an Idempotency-Key header"})
                return
            receipt, charged = ledger.charge(key, order, amount)
            self._reply(201 if charged else 200, receipt)

        def do_GET(self) -> None:
            with ledger.lock:
                self._reply(
                    200,
                    {
                        "charges": ledger.charges,
                        "requests": ledger.requests,
                        "requests_by_key": ledger.requests_by_key,
                    },
                )

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the sample prints its own summary

    return Handler


def serve(port: int = 0) -> ThreadingHTTPServer:
    """A running service (on a thread of its own); ``server_address[1]`` is its port."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(Ledger()))
    threading.Thread(target=server.serve_forever, name="charge-service", daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any)")
    server = serve(parser.parse_args().port)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
