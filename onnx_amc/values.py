"""Checks on values read back from JSON files (logs, profiles, reports), shared so that every
reader refuses the same things: ``true`` is not a number, and neither are NaN or infinity."""

from __future__ import annotations

import math
from typing import Any


def is_finite_number(x: Any) -> bool:
    """An int or float that is finite; bools (an int subclass in Python) are not numbers."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
