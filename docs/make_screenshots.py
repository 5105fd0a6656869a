"""Export the README's debugger screenshots from the app itself (run from the repo root).

    python docs/make_screenshots.py

Uses the checked-in logs the debugger's tests use, so the pictures match what tests check.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from debugger import DebuggerApp  # noqa: E402
from debugger._merged_app import MergedDebuggerApp  # noqa: E402
from tests.chainlogs import write_chain  # noqa: E402
from tests.test_debugger import ACCOUNTS, COUNTER, settle  # noqa: E402

SHOTS = [
    ("debugger-step", ACCOUNTS, [("colon", "4")]),
    ("debugger-lines", ACCOUNTS, [("colon", "9"), "s", "j"]),
    ("debugger-diff", ACCOUNTS, [("colon", "2"), "m", ("colon", "11"), "d"]),
    (
        "debugger-watch",
        COUNTER,
        [("w", 'state["count"] * 10'), ("b", 'state["count"] in (3, 7)'), "c", "c"],
    ),
]


MERGED_SHOTS = [
    ("debugger-merged", [("colon", "middle:5")]),  # the chain of tests/chainlogs.py
]


async def shoot(name: str, source: Path | None, steps: list[object], out: Path) -> None:
    """``source`` None: the merged view over the chain's three logs."""
    with tempfile.TemporaryDirectory() as tmp:
        app: DebuggerApp
        if source is None:
            logs = write_chain(Path(tmp), 5, lost=True)
            app = MergedDebuggerApp([logs[n] for n in ("front", "middle", "back")], index=False)
        else:
            log = Path(tmp) / "log"
            shutil.copytree(source, log)
            app = DebuggerApp(log)
        async with app.run_test(size=(120, 34)) as pilot:
            await settle(pilot)
            for step in steps:
                if isinstance(step, tuple):
                    await pilot.press(step[0])
                    await pilot.pause()
                    await pilot.press(*step[1])
                    await pilot.press("enter")
                else:
                    await pilot.press(str(step))
                await settle(pilot)
            app.clear_notifications()
            await pilot.pause()
            app.save_screenshot(str(out / f"{name}.svg"))


def main() -> None:
    out = REPO / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    for name, source, steps in SHOTS:
        asyncio.run(shoot(name, source, steps, out))
        print(f"wrote docs/images/{name}.svg")
    for name, steps in MERGED_SHOTS:
        asyncio.run(shoot(name, None, steps, out))
        print(f"wrote docs/images/{name}.svg")


if __name__ == "__main__":
    main()
