"""The charge sample (issue 13, item 4): SIGKILLs at every point around a durable side effect,
and the outside service sees each charge exactly once."""

from __future__ import annotations

from pathlib import Path

from samples.charge.demo import POINTS, run_demo


def test_every_order_is_charged_exactly_once_through_every_kill(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "home")
    rows, service = result["rows"], result["service"]
    assert [row["point"] for row in rows] == [point for point, _ in POINTS]
    for row in rows:
        assert row["killed"], f"the shop was not killed at {row['point']}"
        assert row["receipt"] is not None, f"no receipt for the kill at {row['point']}"
    charges = service["charges"]
    by_order = sorted(charge["order"] for charge in charges.values())
    assert by_order == sorted(row["order"] for row in rows)  # one charge per order
    for row in rows:  # the buyer got the receipt of the one charge, whatever the kill point
        (charge,) = [c for c in charges.values() if c["order"] == row["order"]]
        assert row["receipt"] == charge
    repeats = {
        row["point"]
        for row in rows
        for key, charge in charges.items()
        if charge["order"] == row["order"] and service["requests_by_key"][key] > 1
    }
    # Killed after the service answered and before the outcome was durable: it ran again
    # (at least once), under the same key, and the service charged nothing the second time.
    assert {"after-effect", "before-fsync:2"} <= repeats
    assert all(key.startswith("shop/") for key in charges)  # instance/LSN/position
