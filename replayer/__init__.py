"""The replayer: re-execute any instance's recorded history offline, with given code.

    from replayer import Replayer

    with Replayer(".immortals/logs/server") as r:
        r.state_at(120)                       # the state after step 120, as plain data
        for step in r.steps(100, 120): ...    # inputs, effects and state diffs
        r.verify()                            # every step whose effects the code no longer makes
        r.trace(120).lines                    # the lines step 120 ran, with their locals
        r.find(lambda state, inp, fx: state["count"] > 10)

    with LogpointRun(".immortals/logs/server", ["counter.py:16 self.count * 2"]) as run:
        for hit in run.hits():                # every time line 16 ran: step, value
            print(hit.lsn, hit.text)

It is the engine of the time-travel debugger and of retroactive testing; see
docs/ARCHITECTURE.md.
"""

from runtime._errors import NondeterminismError

from ._diff import Change, diff_states, format_path
from ._logpoint import Hit, HitTable, Logpoint, LogpointError, LogpointRun, by_step
from ._replayer import Divergence, Replayer, ReplayError, Step, Trace, VerifyReport
from ._trace import TraceLine

__all__ = [
    "Change",
    "Divergence",
    "Hit",
    "HitTable",
    "Logpoint",
    "LogpointError",
    "LogpointRun",
    "NondeterminismError",
    "ReplayError",
    "Replayer",
    "Step",
    "Trace",
    "TraceLine",
    "VerifyReport",
    "by_step",
    "diff_states",
    "format_path",
]
