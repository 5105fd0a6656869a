"""The charge sample end to end: SIGKILL the shop at every point around its side effect.

For each point, a shop process is armed to SIGKILL itself there (``IMMORTALS_FAULT``), one
order is bought from outside, the shop dies, it is started again, and the buyer's retry (the
client retries under the same idempotency key by itself) gets its receipt. Then the payment
service is asked what it charged. Every order must be charged exactly once, although the
service sees the same charge twice where the shop died after the service had answered.

    python samples/charge/demo.py          # prints one row per kill point, then the verdict

Everything lives in a temporary home (removed afterwards), never under ./.immortals.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from runtime import connect  # noqa: E402
from samples.charge.service import serve  # noqa: E402
from samples.charge.shop import SERVICE_VARIABLE  # noqa: E402

APP = "samples/charge/shop.py:Shop"
# Every moment around one bought order. The call's step is the 1st append of a restarted shop
# and the effect's outcome is the 2nd.
POINTS = (
    ("before-fsync:1", "the call executed; its step is not durable"),
    ("after-fsync:1", "the call is durable; the effect has not run"),
    ("before-effect", "the effect is about to be called"),
    ("after-effect", "the service charged; the outcome is not logged"),
    ("before-fsync:2", "the outcome executed; it is not durable"),
    ("after-fsync:2", "the outcome is durable; the buyer has no answer"),
)


class Shop:
    """The shop's process, started again after each kill."""

    def __init__(self, home: Path, service_url: str) -> None:
        self.home = home
        self.env = dict(os.environ, PYTHONPATH=str(REPO), **{SERVICE_VARIABLE: service_url})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, fault: str = "") -> None:
        env = dict(self.env, IMMORTALS_FAULT=fault)
        command = [sys.executable, "-m", "runtime", "--home", str(self.home)]
        command += ["run", APP, "--name", "shop"]
        with open(self.home / "shop.out", "ab") as out, open(self.home / "shop.err", "ab") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=REPO)
        self.starts += 1
        deadline = time.monotonic() + 30
        while (self.home / "shop.err").read_text().count(" serving on ") < self.starts:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"charge demo: the shop did not start; see {self.home}/shop.err")
            time.sleep(0.02)

    def wait_killed(self, timeout: float = 30.0) -> bool:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout) == -signal.SIGKILL
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def buy_in_background(
    home: Path, order: str, amount: int
) -> tuple[threading.Thread, dict[str, Any]]:
    """A buyer calling ``shop.buy`` with the order as its key; the receipt lands in the dict."""
    got: dict[str, Any] = {}

    def buy() -> None:
        with connect(home, timeout=60) as buyer:
            got["receipt"] = buyer.call("shop", "buy", order, amount, key=order)

    caller = threading.Thread(target=buy, name=f"buyer-{order}")
    caller.start()
    return caller, got


def run_demo(home: Path) -> dict[str, Any]:
    """Run every kill point; what the buyers got and what the service charged."""
    home.mkdir(parents=True, exist_ok=True)
    service = serve()
    url = f"http://127.0.0.1:{service.server_address[1]}"
    shop = Shop(home, url)
    rows: list[dict[str, Any]] = []
    try:
        shop.start()  # the first start (its own step), so the counts in POINTS hold
        shop.stop()
        for i, (point, moment) in enumerate(POINTS, start=1):
            order = f"order-{i}"
            shop.start(fault=point)
            caller, got = buy_in_background(home, order, 10 * i)
            killed = shop.wait_killed()
            if killed:
                shop.start()
            caller.join(90)
            shop.stop()
            row = {"point": point, "moment": moment, "killed": killed, "order": order}
            rows.append({**row, "receipt": got.get("receipt")})
        with urllib.request.urlopen(url + "/charges", timeout=5) as response:
            charged = json.load(response)
    finally:
        shop.stop()
        service.shutdown()
        service.server_close()
    return {"rows": rows, "service": charged}


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="immortals-charge-"))
    try:
        result = run_demo(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    charged = result["service"]
    print(f"{'SIGKILL at':<16} {'when':<48} {'receipt':<8} {'requests':>8} {'charges':>8}")
    wrong = 0
    for row in result["rows"]:
        receipt = (row["receipt"] or {}).get("receipt", "none")
        keys = [k for k, c in charged["charges"].items() if c["order"] == row["order"]]
        requests = sum(charged["requests_by_key"][k] for k in keys)
        wrong += len(keys) != 1 or not row["killed"] or receipt == "none"
        print(f"{row['point']:<16} {row['moment']:<48} {receipt:<8} {requests:>8} {len(keys):>8}")
    verdict = "every order charged exactly once" if not wrong else f"{wrong} rows wrong"
    print(f"\n{charged['requests']} requests reached the service; {verdict}")
    raise SystemExit(1 if wrong else 0)


if __name__ == "__main__":
    main()
