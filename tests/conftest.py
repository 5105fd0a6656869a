"""Shared test configuration.

Hypothesis runs derandomized (one fixed example sequence per test) so CI never flakes on a new
random draw; set HYPOTHESIS_PROFILE=explore locally to search harder with fresh randomness.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests._instances import Cluster, Instance

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "explore",
    deadline=None,
    max_examples=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home directory (registry, logs, secret) for one test's instances."""
    return tmp_path / "home"


@pytest.fixture
def cluster(home: Path) -> Iterator[Cluster]:
    """Real instance processes under ``home``; all are killed when the test ends."""
    started = Cluster(home)
    yield started
    started.stop_all()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """A path where a test may create one log."""
    return tmp_path / "log"


@pytest.fixture
def tally(tmp_path: Path) -> Iterator[Instance]:
    """A Tally instance (tests/apps/chatter.py), started; killed at the end if still running."""
    instance = Instance(tmp_path / "home", "tests/apps/chatter.py:Tally", "tally")
    instance.start()
    yield instance
    instance.ensure_stopped()
