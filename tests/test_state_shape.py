"""The upgrade check's state shape comparison (``_upgrade_check.shape_problems``): what the new
code's ``__init__`` builds against the state it would be handed."""

from __future__ import annotations

from typing import Any

from runtime import Immortal
from runtime._upgrade_check import shape_problems


class Shaped(Immortal):
    version = 2

    def __init__(self) -> None:
        self.count = 0
        self.items: list[str] = []
        self.seen: dict[str, int] = {}
        self.maybe = None  # fits anything
        self.salt = self.random().random()  # __init__ may use the runtime's non-determinism


class Migrating(Shaped):
    version = 3

    @classmethod
    def migrate(cls, state: dict[str, Any], from_version: int | None) -> dict[str, Any]:
        state.setdefault("seen", {})
        return state


def test_the_same_shape_fits_whatever_the_values() -> None:
    state = {"count": 7.5, "items": ("a",), "seen": {"x": 1}, "maybe": [1], "salt": 0.3}
    assert shape_problems(Shaped, state, 2, name="s") == []


def test_a_missing_attribute_and_another_kind_of_value_are_problems() -> None:
    state = {"count": "seven", "items": [], "salt": 0.1, "old": 1}  # "old" is no problem
    problems = shape_problems(Shaped, state, 2, name="s")
    assert problems == [
        "'count' holds a str, the new __init__ makes a number",
        "it has no 'seen', which the new __init__ sets",
        "it has no 'maybe', which the new __init__ sets",  # even one that fits any value
    ]


def test_a_migration_is_applied_before_the_shapes_are_compared() -> None:
    state = {"count": 1, "items": [], "salt": 0.1, "maybe": None}
    assert shape_problems(Migrating, state, 2, name="s") == []
    assert shape_problems(Migrating, state, 3, name="s") != []  # same version: no migration
