"""An app for replay tests: sync and async handlers, awaits, timers, exceptions, randomness."""

from __future__ import annotations

from typing import Any

from runtime import Immortal, rpc


class Account(Immortal):
    def __init__(self) -> None:
        self.balance = 0
        self.history: list[Any] = []
        self.naps = 0
        self.last_stamp = 0.0

    @rpc
    def deposit(self, amount: int) -> int:
        self.balance += amount
        self.history.append(["deposit", amount])
        return self.balance

    @rpc
    def withdraw(self, amount: int) -> int:
        if amount > self.balance:
            raise ValueError(f"cannot withdraw {amount}, balance is {self.balance}")
        self.balance -= amount
        self.history.append(["withdraw", amount])
        return self.balance

    @rpc
    async def transfer(self, to: str, amount: int) -> str:
        self.balance -= amount
        try:
            await self.ref(to).deposit(amount)
        except Exception as exc:
            self.balance += amount  # give it back: the other side refused
            self.history.append(["refused", to, amount])
            return f"refused: {exc}"
        self.history.append(["sent", to, amount])
        return "sent"

    @rpc
    async def nap(self, seconds: float) -> int:
        await self.sleep(seconds)
        self.naps += 1
        return self.naps

    @rpc
    def stamp(self) -> float:
        self.last_stamp = self.now()
        self.history.append(["lucky", self.random().randint(1, 6)])
        return self.last_stamp
