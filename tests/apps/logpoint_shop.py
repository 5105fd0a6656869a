"""An app whose handler calls into another module of the project (tests/test_logpoint.py)."""

from __future__ import annotations

from runtime import Immortal, rpc
from tests.apps.logpoint_helper import price


class Shop(Immortal):
    def __init__(self) -> None:
        self.sold = 0

    @rpc
    def sell(self, *items: str) -> int:
        self.sold += price(list(items))
        return self.sold
