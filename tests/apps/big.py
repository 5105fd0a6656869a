"""An app whose handlers produce values too large to send: they must fail cleanly."""

from __future__ import annotations

from runtime import Immortal, RemoteError, rpc

HUGE = 20 * 1024 * 1024  # over the 16 MiB a value may take


class Big(Immortal):
    def __init__(self) -> None:
        self.calls = 0

    @rpc
    def blob(self, size: int) -> bytes:
        self.calls += 1
        return b"x" * size

    @rpc
    def count(self) -> int:
        return self.calls


class Asker(Immortal):
    """Calls Big.blob with a huge size, then sends Big a huge argument; emits what happened."""

    async def main(self) -> None:
        big = self.ref("big")
        try:
            await big.blob(HUGE)
            self.emit("no error")
        except RemoteError as exc:
            self.emit(["reply refused", exc.type_name])
        try:
            await big.blob(b"y" * HUGE)  # type: ignore[arg-type]
            self.emit("no error")
        except Exception as exc:
            self.emit(["call refused", type(exc).__name__])
        self.emit(["after", await big.count()])
