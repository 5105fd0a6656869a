"""Version 2 of ``upgrade_v1.Bank``: the ``log`` became ``entries``, with a migration.

``Bank`` migrates right; ``WrongBank`` forgets the history (its effects are the same, so only
``--check-migration`` can tell).
"""

from __future__ import annotations

from typing import Any

from runtime import Immortal, rpc


class Bank(Immortal):
    version = 2

    def __init__(self) -> None:
        self.balance = 0
        self.entries: list[Any] = []

    @classmethod
    def migrate(cls, state: dict[str, Any], from_version: int | None) -> dict[str, Any]:
        if from_version is None:
            state["entries"] = state.pop("log")
        return state

    @rpc
    def deposit(self, amount: int) -> int:
        self.balance += amount
        self.entries.append(["deposit", amount])
        return self.balance

    @rpc
    def withdraw(self, amount: int) -> int:
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.balance -= amount
        self.entries.append(["withdraw", amount])
        self.emit({"withdrawn": amount, "total": self.balance})
        return self.balance

    @rpc
    def stamp(self) -> float:
        return self.now()


class WrongBank(Bank):
    @classmethod
    def migrate(cls, state: dict[str, Any], from_version: int | None) -> dict[str, Any]:
        state.pop("log", None)
        state["entries"] = []  # wrong: the history is lost
        return state
