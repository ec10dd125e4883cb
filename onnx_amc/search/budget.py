"""Resource budgets and AMC's action wall.

A budget keeps a fraction ``keep`` (AMC's ``preserve_ratio``, the CLI's R) of a resource of the
original model: MACs, params, or anything a ``cost(policy) -> float`` callable measures (a
latency predictor or measurer plugs in here).  The cost must not increase when a group's keep
ratio decreases; the wall's bisection relies on it.

The wall (:func:`clamp_to_budget`) is the official code's ``_action_wall``: before applying the
action of group ``t``, assume every later group will be pruned to ``lbound`` and every earlier
group keeps its chosen ratio, and clip the action so the target stays reachable.  The official
code solves a linear equation for the clip.  Here MACs are bilinear in the keep counts (a Conv's
input and output channels can belong to different groups, and both change) and counts are
rounded (multiples of 8), so the clip is found by bisection over the group's achievable keep
counts with the real resource count of each candidate: exact, and never over budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .space import LayerSpace

__all__ = [
    "Budget",
    "CostFn",
    "budget_use",
    "callable_budget",
    "check_feasible",
    "clamp_to_budget",
    "fill_budget",
    "largest_fitting",
    "macs_budget",
    "make_budget",
    "params_budget",
]

#: A resource of a (rounded) policy ``{group id: keep ratio}``; groups not named keep all.
CostFn = Callable[[Mapping[str, float]], float]

_FLOAT_TOL = 1e-9  # relative slack for float costs (latency): rounding, not measurement noise


@dataclass(frozen=True)
class Budget:
    """Keep at most ``keep x original`` of the resource ``kind``.

    ``cost`` maps a policy to the resource; ``original`` is the cost of the unpruned model.
    """

    kind: str
    keep: float
    original: float
    cost: CostFn
    rel_tol: float = 0.0  # slack for float costs; MACs and params are integers, compared exactly

    def __post_init__(self) -> None:
        if not (0.0 < self.keep <= 1.0) or math.isnan(self.keep):
            raise ValueError(f"{self.kind} budget must be a fraction to keep in (0, 1], "
                             f"got {self.keep}")
        if not self.original > 0:
            raise ValueError(f"{self.kind} of the original model must be > 0, got {self.original}")

    @property
    def target(self) -> float:
        return self.keep * self.original

    def fits(self, value: float) -> bool:
        return value <= self.target * (1.0 + self.rel_tol)


def macs_budget(space: LayerSpace, keep: float) -> Budget:
    """MACs (batch 1, as ``graph_ops.count``), counted exactly from the rounded keep masks."""

    def cost(policy: Mapping[str, float]) -> float:
        return float(space.macs_of(space.ratios_of(policy)))

    return Budget("macs", keep, float(space.original.macs or 0), cost)


def params_budget(space: LayerSpace, keep: float) -> Budget:
    """Parameters (float constants), via ``graph_ops.count`` on the rounded keep masks."""

    def cost(policy: Mapping[str, float]) -> float:
        return float(space.counts_of(space.ratios_of(policy)).params)

    return Budget("params", keep, float(space.original.params), cost)


def callable_budget(kind: str, keep: float, cost: CostFn, original: float | None = None) -> Budget:
    """Any monotone resource, e.g. predicted or measured latency in ms.  ``original`` defaults
    to ``cost({})`` (the unpruned model)."""
    return Budget(kind, keep, float(cost({}) if original is None else original), cost,
                  rel_tol=_FLOAT_TOL)


def make_budget(space: LayerSpace, kind: str, keep: float) -> Budget:
    """``kind`` in ``{"macs", "flops", "params"}`` (flops is an alias: FLOPs = 2 x MACs)."""
    if kind in ("macs", "flops"):
        return macs_budget(space, keep)
    if kind == "params":
        return params_budget(space, keep)
    raise ValueError(f"unknown budget kind '{kind}'; use macs, flops, params or callable_budget")


def _cost(budget: Budget, space: LayerSpace, ratios: Sequence[float]) -> float:
    return budget.cost(space.policy(ratios))


def budget_use(budget: Budget, space: LayerSpace, ratios: Sequence[float]) -> float:
    """Resource of ``ratios`` as a fraction of the original (compare with ``budget.keep``)."""
    return _cost(budget, space, ratios) / budget.original


def check_feasible(budget: Budget, space: LayerSpace) -> None:
    """Raise unless pruning every group to ``lbound`` meets the budget.

    Below that, no policy the agent can express fits, and the wall could not keep its promise.

    Raises:
        ValueError: the budget is below what ``lbound`` allows.
    """
    floor = _cost(budget, space, [space.lbound] * space.num_groups)
    if not budget.fits(floor):
        raise ValueError(
            f"{budget.kind} budget keep={budget.keep:g} is infeasible: with every prunable group "
            f"at the lower bound {space.lbound:g} the model keeps {floor / budget.original:.4f} "
            f"of its {budget.kind} (frozen layers cannot be pruned); raise the budget or lower "
            f"the lower bound (--lbound)")


def clamp_to_budget(
    budget: Budget,
    space: LayerSpace,
    chosen: Sequence[float],
    action: float,
) -> float:
    """Clip the keep ratio of group ``t = len(chosen)`` so the budget stays reachable.

    Args:
        budget: the target.
        space: the groups, their rounding and ``lbound``.
        chosen: ratios already applied to groups ``0 .. t-1`` (decision order).
        action: the ratio the agent asks for group ``t`` (already in ``[lbound, rbound]``).

    Returns:
        ``action`` itself if it fits with every later group at ``lbound``; otherwise the ratio
        ``k / size`` of the largest achievable keep count ``k`` that fits.  If even ``lbound``
        does not fit (only possible when ``chosen`` came from elsewhere, or the budget is
        infeasible), ``lbound``.
    """
    t = len(chosen)
    if t >= space.num_groups:
        raise ValueError(f"all {space.num_groups} groups already have a ratio")
    lb = space.lbound
    later = [lb] * (space.num_groups - t - 1)

    def fits(r: float) -> bool:
        return budget.fits(_cost(budget, space, [*chosen, r, *later]))

    if fits(action):
        return float(action)
    size = space.sizes[t]
    want = space.keep_counts([*([1.0] * t), action])[t]
    options = [k for k in space.options(t) if k < want]  # options[0]: the count at lbound
    i = _last_fitting(options, lambda k: fits(k / size))
    return float(lb) if i is None else max(lb, options[i] / size)


def _last_fitting(options: Sequence[int], fits: Callable[[int], bool]) -> int | None:
    """Index of the last of the ascending ``options`` that fits, by bisection (the cost is
    monotone in a group's keep count); None when not even the first fits."""
    if not options or not fits(options[0]):
        return None
    lo, hi = 0, len(options) - 1  # options[lo] fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(options[mid]):
            lo = mid
        else:
            hi = mid - 1
    return lo


def largest_fitting(lo: float, hi: float, fits: Callable[[float], bool],
                    iterations: int) -> float:
    """The largest ``x`` in ``[lo, hi]`` with ``fits(x)``, by bisection, for a ``fits`` that
    holds at ``lo`` and, once false, stays false (rounding makes costs step functions, so the
    answer is exact only to ``(hi - lo) / 2**iterations``)."""
    if fits(hi):
        return hi
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def fill_budget(budget: Budget, space: LayerSpace, ratios: Sequence[float],
                *, iterations: int = 30) -> list[float]:
    """``ratios`` raised until the budget is spent: first all by one factor ``s >= 1`` (each
    capped at ``rbound``), the largest whose rounded policy still fits; then, in decision
    order, each group to its largest achievable keep count that still fits.

    Why: the wall only forbids going over the budget.  An agent that has not yet learned to
    spend it (AMC ran 400 episodes; a CPU search runs tens) ends under budget, and under a
    hard budget a lighter candidate is a less accurate one for nothing.  The common factor
    keeps the relative keep ratios the agent chose; the second pass spends what the factor's
    rounding steps leave (with equal ratios every group crosses a rounding step at the same
    factor).  Ratios that already miss the budget come back unchanged (the wall guarantees
    they do not).
    """
    chosen = [float(r) for r in ratios]
    if not chosen or not budget.fits(_cost(budget, space, chosen)):
        return chosen
    top = space.rbound

    def scaled(f: float) -> list[float]:
        return [min(top, r * f) for r in chosen]

    # factor 1 fits; at top / min(chosen) every ratio is at rbound
    out = scaled(largest_fitting(1.0, top / max(min(chosen), 1e-12),
                                 lambda f: budget.fits(_cost(budget, space, scaled(f))),
                                 iterations))
    counts = space.keep_counts(out)
    for t, size in enumerate(space.sizes):
        options = [k for k in space.options(t) if counts[t] < k <= top * size]

        def fits(k: int, t: int = t, size: int = size) -> bool:
            return budget.fits(_cost(budget, space, [*out[:t], k / size, *out[t + 1:]]))

        i = _last_fitting(options, fits)
        if i is not None:
            out[t] = options[i] / size
    return out
