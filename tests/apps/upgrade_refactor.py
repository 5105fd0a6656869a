"""An equivalent refactor of ``upgrade_v1.Bank``: same effects, differently written."""

from __future__ import annotations

from typing import Any

from runtime import Immortal, rpc


class Bank(Immortal):
    def __init__(self) -> None:
        self.balance = 0
        self.log: list[Any] = []

    def _record(self, kind: str, amount: int) -> int:
        self.log.append([kind, amount])
        return self.balance

    @rpc
    def deposit(self, amount: int) -> int:
        self.balance = self.balance + amount
        return self._record("deposit", amount)

    @rpc
    def withdraw(self, amount: int) -> int:
        if self.balance < amount:
            raise ValueError("insufficient funds")
        self.balance = self.balance - amount
        total = self._record("withdraw", amount)
        self.emit({"withdrawn": amount, "total": total})
        return total

    @rpc
    def stamp(self) -> float:
        now = self.now()
        return now
