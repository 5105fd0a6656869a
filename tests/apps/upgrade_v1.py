"""The recorded version of a small bank, for retroactive tests (``tests/test_upgrade_test.py``)."""

from __future__ import annotations

from typing import Any

from runtime import Immortal, rpc


class Bank(Immortal):
    def __init__(self) -> None:
        self.balance = 0
        self.log: list[Any] = []

    @rpc
    def deposit(self, amount: int) -> int:
        self.balance += amount
        self.log.append(["deposit", amount])
        return self.balance

    @rpc
    def withdraw(self, amount: int) -> int:
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.balance -= amount
        self.log.append(["withdraw", amount])
        self.emit({"withdrawn": amount, "total": self.balance})
        return self.balance

    @rpc
    def stamp(self) -> float:
        return self.now()
