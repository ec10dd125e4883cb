"""What pruning must change in the model, as data.

Rules emit these while analysing; ``apply`` executes them for a given keep mask. Layouts hold raw
channel-class ids; ``keep`` is a boolean array over raw ids, so an edit needs no remapping when
classes are merged later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["SliceConst", "GroupedWeightSlice", "ValueEdit", "SetCount", "kept_positions",
           "kept_count"]


def kept_positions(layout: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Positions along a channel axis that survive: those whose class is kept."""
    return np.flatnonzero(keep[layout])


def kept_count(layout: np.ndarray, keep: np.ndarray) -> int:
    return int(np.count_nonzero(keep[layout]))


@dataclass(frozen=True, eq=False)
class SliceConst:
    """Slice a constant along ``axis`` to the kept positions of ``layout``."""

    tensor: str
    axis: int
    layout: np.ndarray


@dataclass(frozen=True, eq=False)
class GroupedWeightSlice:
    """A grouped Conv weight [C_out, C_in/g, ...]: rows by ``out_layout``, and per row the kept
    local input positions of its group's block of ``in_layout`` (equal counts per block)."""

    tensor: str
    out_layout: np.ndarray
    in_layout: np.ndarray
    groups: int


# A value edit recomputes a small integer input or attribute (Split sizes, Reshape targets, Slice
# bounds, the group attribute of a depthwise Conv) from the keep mask.
Compute = Callable[[np.ndarray], "np.ndarray | int | list[int]"]


@dataclass(frozen=True, eq=False)
class ValueEdit:
    """Replace input ``input_index`` (if >= 0) or attribute ``attr`` of node ``node_index``."""

    node_index: int
    compute: Compute
    input_index: int = -1
    attr: str = ""


@dataclass(frozen=True, eq=False)
class SetCount:
    """A ValueEdit compute: ``value`` with entry ``pos`` replaced by the kept count of ``layout``
    (a Reshape target, Resize sizes or Expand shape that hard-codes a channel count)."""

    value: np.ndarray
    pos: int
    layout: np.ndarray

    def __call__(self, keep: np.ndarray) -> np.ndarray:
        out = self.value.reshape(-1).copy()
        out[self.pos] = kept_count(self.layout, keep)
        return out.reshape(self.value.shape)
