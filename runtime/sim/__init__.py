"""A deterministic simulator for the runtime: real apps, the real coordinator, a fake world.

Many instances run in one process on a seeded scheduler (``_world``), over a simulated network
that loses, duplicates and reorders packets, partitions instances and resets connections
(``_net``), and a simulated log that loses unsynced appends and tears the last one (``_log``).
Instances crash between any two actions of their coordinator and restart from what their log
kept, at a new epoch and address (``_host``). Each run is compared with a failure-free run of
the same workload (``_workloads``): the same final states, the same replies, the same emits
(the documented at-least-once print window aside), every outside call answered once.

The ``standby`` workload gives instances one or two standbys that follow the log and take over
when the primary dies, and pauses primaries past their lease so that a standby takes over while
they live (zombies): the world records every release with the epoch that made it and flags one
made after a higher epoch claimed the log, and checks that a standby's state when it takes over
is what replaying the durable log gives. Driver variants (``--driver module:Class``, a
``SimNode`` subclass) plant bugs in the driver as coordinator variants do in the coordinator.

    python -m runtime.sim --seeds 2000            # what `make sim` runs
    python -m runtime.sim --seeds 1 --first 17 --workload chain --trace

A failing seed prints the line that replays it with a trace. The coordinator under test is a
parameter (``run_seed(..., coordinator_cls=...)``, ``--coordinator module:Class``): that is how
the tests plant known bugs and show the simulator finds each.
"""

from ._run import SeedResult, repro_command, run_seed, workload_for
from ._workloads import WORKLOADS

__all__ = ["WORKLOADS", "SeedResult", "repro_command", "run_seed", "workload_for"]
