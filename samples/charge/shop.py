"""An immortal that charges through an outside service: a durable side effect, end to end.

``buy`` asks for the charge with ``self.run``: the runtime calls ``charge_card`` on a worker
thread once the step that asked is durable, logs the receipt it returns, and hands it back to
the handler. Replay (after a crash, in ``immortals replay``, in the debugger) gets the logged
receipt and never calls the service again. A crash after the service charged and before the
receipt was logged calls it again, under the same key, and the service answers with the first
receipt: that is why ``charge_card`` passes ``key`` on as the request's ``Idempotency-Key``.
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

from runtime import Immortal, rpc

SERVICE_VARIABLE = "CHARGE_SERVICE"  # where the payment service listens, e.g. http://127.0.0.1:8080


def charge_card(key: str, order: str, amount: int) -> dict[str, Any]:
    """The side effect: one HTTP request. Runs outside the handler, so real I/O is fine here."""
    request = urllib.request.Request(
        os.environ[SERVICE_VARIABLE] + "/charge",
        data=json.dumps({"order": order, "amount": amount}).encode(),
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        receipt: dict[str, Any] = json.load(response)
        return receipt


class Shop(Immortal):
    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}

    @rpc
    async def buy(self, order: str, amount: int) -> dict[str, Any]:
        if order in self.orders:  # the shop's own rule: one charge per order
            return self.orders[order]
        receipt = await self.run(charge_card, order, amount, retries=5, backoff=0.2, timeout=5.0)
        self.orders[order] = receipt
        self.emit({"order": order, "receipt": receipt["receipt"]})
        return receipt

    @rpc
    def receipts(self) -> dict[str, dict[str, Any]]:
        return self.orders
