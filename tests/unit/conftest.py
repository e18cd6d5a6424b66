"""Fixtures for the IR unit tests (helpers live in ir_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
