"""An app for the standby tests: every call's count is also emitted (an output on stdout)."""

from runtime import Immortal, rpc


class Tally(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @rpc
    def inc(self) -> int:
        self.count += 1
        self.emit(self.count)
        return self.count
