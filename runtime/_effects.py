"""Running a durable side effect (``self.run``): its attempts, retries, backoff and timeout.

The coordinator decides *when* an effect runs (once the step that asked for it is durable) and
logs what it returned; this module only runs it, on whatever worker thread the driver gives
it, and turns the outcome into what the log stores: the value, or ``[type name, message]`` of
the last failure. It never runs on the thread that runs handlers, so the function may block,
do I/O and use threads.

A per-attempt timeout cannot stop a Python function; the attempt is run on a thread of its own,
and after the timeout it is abandoned (it keeps running, and whatever it returns is ignored).
That is the at-least-once window the idempotency key exists for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ._executor import EffectRequest

Outcome = tuple[bool, Any]  # (True, value) or (False, [type name, message])


def run_effect(request: EffectRequest, *, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Call ``request.fn(request.key, *request.args)`` until it succeeds or the retries run out."""
    delay = request.backoff
    outcome: Outcome = (False, ["RuntimeError", "not run"])
    for attempt in range(request.retries + 1):
        if attempt:
            sleep(delay)
            delay *= 2
        outcome = _attempt(request)
        if outcome[0]:
            return outcome
    return outcome


def _attempt(request: EffectRequest) -> Outcome:
    if request.timeout is None:
        return _call(request)
    box: list[Outcome] = []
    worker = threading.Thread(
        target=lambda: box.append(_call(request)), name=f"effect-{request.key}", daemon=True
    )
    worker.start()
    worker.join(request.timeout)
    if not box:
        return False, [
            "TimeoutError",
            f"no outcome within {request.timeout:g} s (the attempt may still be running)",
        ]
    return box[0]


def _call(request: EffectRequest) -> Outcome:
    try:
        return True, request.fn(request.key, *request.args)
    except BaseException as exc:  # SystemExit too: on a worker it is the effect's failure
        return False, [type(exc).__name__, str(exc)]
