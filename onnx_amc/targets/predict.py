"""Latency prediction from a measured per-op profile (nn-Meter / NetAdapt style tables).

A model is cut into *units*: a Conv/ConvTranspose/Gemm/MatMul together with the ops ONNX Runtime
fuses into it (a following BatchNormalization, one residual Add, one activation), or any other
single op that carries channels (pools, standalone element-wise ops, Concat, Resize, ...).  A
unit's cost depends on at most two channel counts: ``x`` (channels of its first input) and ``y``
(channels of its output, when they are not the same channels as ``x``).  A profile holds measured
``(x, y, ms)`` samples of every unit at the keep counts its candidates can take (a grid of
``round_to`` multiples); prediction is a piecewise bilinear lookup per unit, summed, plus a fitted
correction ``a + b * sum`` for what single-unit timings miss (session overhead, reorders at the
model's ends, cache effects), fitted on whole-model measurements taken while building the profile.
Profiles from this version map the sum to milliseconds through the measured points themselves
(:func:`corrected_ms` with ``knots``: monotone piecewise-linear), because the relation bends: a
line fitted over the whole range was 20-27% high on heavily pruned MobileNetV2 variants, and a
line fitted over heavily pruned ones was 10% low in the middle of ResNet-18's range.

Tables are made monotone (running maximum along each axis): the action wall's bisection needs a
cost that never grows when a keep ratio shrinks, and timing noise must not break that.

Without a profile, :func:`estimate_cost_fn` gives a FLOPs/memory estimate in relative units
(unpruned model = 1.0); it is labelled estimated, never measured.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from graph_ops import Analysis, importance, make_plan
from onnx_amc.errors import InputError
from onnx_amc.values import is_finite_number

if TYPE_CHECKING:  # pragma: no cover
    from onnx_amc.search.space import LayerSpace

__all__ = [
    "FORMAT",
    "VERSION",
    "Predictor",
    "Unit",
    "estimate_cost_fn",
    "find_units",
    "load_profile",
    "model_fingerprint",
    "save_profile",
]

logger = logging.getLogger(__name__)

FORMAT = "onnx-amc-latency-profile"
VERSION = 1

#: Ops that carry their channels' cost into a fused kernel after a Conv/Gemm on ORT CPU.
FUSED_ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh"})
ANCHORS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Unit:
    """One kernel-sized piece of the model whose latency is looked up as a whole.

    ``x_cls`` / ``y_cls`` are the channel classes (``analysis.raw_to_class`` ids) of the two
    channel counts the unit's cost depends on (``y_cls`` None: one count).  ``macs_coef``,
    ``macs_kind`` and the spatial sizes give MACs and activation elements from ``(x, y)`` for
    the FLOPs/memory estimate and the generic profile.
    """

    id: str
    kind: str
    ops: tuple[str, ...]
    nodes: tuple[int, ...]
    x_cls: np.ndarray | None
    y_cls: np.ndarray | None
    x_full: int
    y_full: int
    macs_coef: int  # MACs = coef * x * y / groups ("dense"), coef * x ("dw"), 0 ("none")
    macs_kind: str
    groups: int
    x_spatial: int  # elements per channel of the input / output activations
    y_spatial: int

    def counts(self, keep: np.ndarray) -> tuple[int, int]:
        """``(x, y)`` kept under a keep mask over classes (``y = x`` for one-count units)."""
        x = int(np.count_nonzero(keep[self.x_cls])) if self.x_cls is not None else self.x_full
        if self.y_cls is None:
            return x, x if self.x_cls is not None else self.y_full
        return x, int(np.count_nonzero(keep[self.y_cls]))

    def macs(self, x: float, y: float) -> float:
        if self.macs_kind == "dense":
            return self.macs_coef * x * y / self.groups
        if self.macs_kind == "dw":
            return float(self.macs_coef * x)
        return 0.0

    def elements(self, x: float, y: float) -> float:
        return self.x_spatial * x + self.y_spatial * y


def _prod_except(shape: Sequence | None, axis: int | None) -> int:
    if not shape:
        return 0
    out = 1
    for i, d in enumerate(shape):
        if i == axis:
            continue
        out *= d if isinstance(d, int) and d > 0 else 1
    return out


def _followers(analysis: Analysis, idx: int, taken: set[int]) -> list[int]:
    """Nodes ORT fuses into the Conv/Gemm at ``idx``: BN?, Add (residual)?, activation?."""
    view = analysis.view
    out: list[int] = []
    stage = 0  # 0: BN allowed, 1: Add allowed, 2: activation allowed, 3: done
    tensor = view.nodes[idx].output[0]
    while stage < 3:
        users = view.consumers.get(tensor, [])
        if tensor in view.graph_outputs or len(users) != 1 or users[0] in taken:
            break
        j = users[0]
        node = view.nodes[j]
        if node.domain not in ("", "ai.onnx") or not node.output:
            break
        op = node.op_type
        if op == "BatchNormalization" and stage == 0 and node.input[0] == tensor:
            stage = 1
        elif op in ("Add", "Sum") and stage <= 1 and len(node.input) == 2:
            other = node.input[1] if node.input[0] == tensor else node.input[0]
            if view.is_const(other) or view.shape(other) != view.shape(tensor):
                break
            stage = 2
        elif op in FUSED_ACTIVATIONS and node.input[0] == tensor:
            stage = 3
        else:
            break
        out.append(j)
        tensor = node.output[0]
    return out


def _kind(analysis: Analysis, node: onnx.NodeProto) -> str:
    if node.op_type == "Conv":
        term = next((t for t in analysis.mac_terms if t.node_index ==
                     analysis.view.producer.get(node.output[0])), None)
        if term is not None and term.depthwise:
            return "dwconv"
        if term is not None and term.groups > 1:
            return "gconv"
        return "conv"
    return {"ConvTranspose": "convtranspose", "Gemm": "gemm", "MatMul": "matmul"}.get(
        node.op_type, node.op_type.lower())


def find_units(analysis: Analysis) -> list[Unit]:
    """Cut the model into units (see the module docstring), in node order.

    Nodes that touch no channel-carrying tensor (shape arithmetic, constants) are left out:
    pruning does not change them, so their cost belongs to the fitted constant.
    """
    view, ctx = analysis.view, analysis.ctx
    r2c = analysis.raw_to_class
    term_of = {t.node_index: t for t in analysis.mac_terms}
    taken: set[int] = set()
    units: list[Unit] = []
    for idx, node in enumerate(view.nodes):
        if idx in taken or not node.output or node.op_type == "Constant":
            continue
        if node.output[0] in view.const_source:
            continue
        names = [n for n in (*node.input, *node.output) if n]
        if not any(ctx.chan(n) is not None for n in names):
            continue
        members = [idx]
        if node.op_type in ANCHORS and node.domain in ("", "ai.onnx"):
            members += _followers(analysis, idx, taken | {idx})
        taken.update(members)
        last = view.nodes[members[-1]].output[0]
        xin = node.input[0] if node.input else ""
        xc, yc = ctx.chan(xin), ctx.chan(last)
        x_cls = r2c[xc.layout] if xc is not None else None
        y_cls = r2c[yc.layout] if yc is not None else None
        if x_cls is not None and y_cls is not None and \
                np.array_equal(np.unique(x_cls), np.unique(y_cls)):
            y_cls = None  # the same channels on both sides (depthwise, element-wise, pools)
        xs, ys = view.shape(xin) if xin else None, view.shape(last)
        term = term_of.get(idx)
        # Without channel state (a graph input), the fixed channel count of the input.
        x_full = xc.size if xc is not None else (term.n_in if term is not None else 0)
        y_full = yc.size if yc is not None else x_full
        if term is None or term.coef is None:
            mk, coef, groups = "none", 0, 1
        elif term.depthwise:
            mk, coef, groups = "dw", int(term.coef * (term.n_out // max(term.n_in, 1))), 1
        else:
            mk, coef, groups = "dense", int(term.coef), int(term.groups)
        units.append(Unit(
            id=last if len(members) == 1 else node.output[0],
            kind=_kind(analysis, node),
            ops=tuple(view.nodes[m].op_type for m in members),
            nodes=tuple(members),
            x_cls=x_cls,
            y_cls=y_cls,
            x_full=x_full,
            y_full=y_full,
            macs_coef=coef,
            macs_kind=mk,
            groups=groups,
            x_spatial=_prod_except(xs, xc.axis if xc is not None else None),
            y_spatial=_prod_except(ys, yc.axis if yc is not None else None),
        ))
    return units


def model_fingerprint(analysis: Analysis) -> str:
    """sha256 of what latency depends on: ops, attributes, wiring, constant and input shapes.

    Weights' values are left out on purpose: a re-trained model with the same architecture
    keeps its profile.
    """
    h = hashlib.sha256()
    view = analysis.view
    for name in sorted(view.graph_inputs):
        h.update(f"in {name} {view.shape(name)}\n".encode())
    for node in view.nodes:
        attrs = []
        for a in node.attribute:
            if a.type in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.GRAPH,
                          onnx.AttributeProto.GRAPHS, onnx.AttributeProto.TENSORS):
                attrs.append(a.name)
            else:
                attrs.append(f"{a.name}={onnx.helper.get_attribute_value(a)!r}")
        h.update(f"{node.domain}.{node.op_type} {list(node.input)} {list(node.output)} "
                 f"{attrs}\n".encode())
    for name in sorted(view.initializers):
        h.update(f"w {name} {list(view.initializers[name].dims)}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Profile files
# --------------------------------------------------------------------------------------------

def _bad(path: str | os.PathLike[str], why: str) -> InputError:
    return InputError(f"latency profile '{path}' is malformed: {why}")


def _check_samples(path, where: str, samples: Any) -> None:
    if not isinstance(samples, list) or not samples:
        raise _bad(path, f"{where}: 'samples' must be a non-empty list")
    for s in samples:
        ok = isinstance(s, list) and len(s) == 3 and all(map(is_finite_number, s)) \
            and s[2] >= 0
        if not ok:
            raise _bad(path, f"{where}: each sample must be [x, y, ms] with finite numbers")


def validate_profile(profile: Any, path: str | os.PathLike[str] = "<profile>") -> dict:
    """Check the structure of a profile document; return it.

    Raises:
        InputError: wrong format tag or version, missing or mistyped fields.
    """
    if not isinstance(profile, dict):
        raise _bad(path, "expected a JSON object")
    if profile.get("format") != FORMAT:
        raise _bad(path, f"'format' is not '{FORMAT}'")
    if profile.get("version") != VERSION:
        raise _bad(path, f"unsupported version {profile.get('version')!r} (this build reads "
                         f"version {VERSION})")
    kind = profile.get("kind")
    if kind not in ("model", "generic"):
        raise _bad(path, "'kind' must be 'model' or 'generic'")
    if not isinstance(profile.get("device"), dict):
        raise _bad(path, "'device' must be an object")
    if kind == "model":
        model = profile.get("model")
        if not isinstance(model, dict) or not isinstance(model.get("fingerprint"), str):
            raise _bad(path, "'model.fingerprint' is missing")
        units = profile.get("units")
        if not isinstance(units, list) or not units:
            raise _bad(path, "'units' must be a non-empty list")
        for i, u in enumerate(units):
            if not isinstance(u, dict) or not isinstance(u.get("id"), str):
                raise _bad(path, f"unit {i} has no 'id'")
            _check_samples(path, f"unit '{u['id']}'", u.get("samples"))
        corr = profile.get("correction")
        if not isinstance(corr, dict) or not all(
                is_finite_number(corr.get(k)) for k in ("a_ms", "b")):
            raise _bad(path, "'correction' needs finite numbers 'a_ms' and 'b'")
        if corr["b"] <= 0:
            raise _bad(path, "'correction.b' must be > 0")
        knots = corr.get("knots", [])
        ok = isinstance(knots, list) and all(
            isinstance(k, list) and len(k) == 2 and all(
                is_finite_number(v) and v > 0 for v in k)
            for k in knots)
        if ok and knots:
            xs, ys = [k[0] for k in knots], [k[1] for k in knots]
            ok = all(b > a for a, b in zip(xs, xs[1:], strict=False)) and \
                all(b >= a for a, b in zip(ys, ys[1:], strict=False))
        if not ok:
            raise _bad(path, "'correction.knots' must be [sum_ms, measured_ms] pairs of positive "
                       "numbers, both increasing")
    else:
        fits = profile.get("fits")
        if not isinstance(fits, dict) or not fits:
            raise _bad(path, "'fits' must be a non-empty object")
        for k, coef in fits.items():
            if not (isinstance(coef, list) and len(coef) == 3
                    and all(map(is_finite_number, coef))):
                raise _bad(path, f"fit '{k}' must be 3 finite numbers")
    return profile


def load_profile(path: str | os.PathLike[str]) -> dict:
    """Read and validate a profile; warn (logging) when it was measured with another ORT.

    Raises:
        InputError: unreadable file, not JSON, or not a valid profile (one line).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read latency profile '{path}': {exc.strerror or exc}"
                         ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(path, f"not JSON ({exc.msg} at line {exc.lineno})") from None
    validate_profile(doc, path)
    warning = stale_warning(doc)
    if warning:
        logger.warning("latency profile '%s': %s", path, warning)
    return doc


def stale_warning(profile: Mapping[str, Any]) -> str | None:
    """A warning if the profile was measured with another onnxruntime version, else None."""
    import onnxruntime as ort

    theirs = profile.get("device", {}).get("onnxruntime")
    if theirs and theirs != ort.__version__:
        return (f"measured with onnxruntime {theirs}, running {ort.__version__}: "
                "predictions may be off; rebuild it with `onnx-amc profile`")
    return None


def save_profile(profile: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``profile`` as JSON atomically (temp file in the same folder, then rename)."""
    from graph_ops.load import write_atomic  # the mode every other output gets (umask)

    path = Path(path)
    validate_profile(dict(profile), path)
    write_atomic(path, (json.dumps(profile, indent=1, sort_keys=False) + "\n").encode())


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Table:
    """Monotone piecewise-bilinear table over ``xs`` x ``ys`` (one row when ``ys`` is one
    value).  Outside the grid: linear extrapolation of the edge cell, never below 0."""

    xs: np.ndarray
    ys: np.ndarray
    ms: np.ndarray  # (len(xs), len(ys))

    @classmethod
    def from_samples(cls, samples: Sequence[Sequence[float]]) -> Table:
        arr = np.asarray(samples, dtype=np.float64)
        xs, xi = np.unique(arr[:, 0], return_inverse=True)
        ys, yi = np.unique(arr[:, 1], return_inverse=True)
        grid = np.full((xs.size, ys.size), np.nan)
        for i in range(xs.size):
            for j in range(ys.size):
                sel = (xi == i) & (yi == j)
                if sel.any():
                    grid[i, j] = float(np.median(arr[sel, 2]))
        if np.isnan(grid).any():
            # Scattered samples (channels of several groups meet): fill the missing cells from a
            # least-squares bilinear surface c0 + c1 x + c2 y + c3 x y over all samples.
            a = np.column_stack([np.ones(len(arr)), arr[:, 0], arr[:, 1], arr[:, 0] * arr[:, 1]])
            coef, *_ = np.linalg.lstsq(a, arr[:, 2], rcond=None)
            gx, gy = np.meshgrid(xs, ys, indexing="ij")
            fill = coef[0] + coef[1] * gx + coef[2] * gy + coef[3] * gx * gy
            grid = np.where(np.isnan(grid), np.maximum(fill, 0.0), grid)
        grid = np.maximum.accumulate(np.maximum.accumulate(grid, axis=0), axis=1)
        return cls(xs, ys, grid)

    def __post_init__(self) -> None:
        # Plain Python copies: the action wall calls this thousands of times per episode, and
        # scalar numpy arithmetic is ~10x slower than floats.
        object.__setattr__(self, "_x", [float(v) for v in self.xs])
        object.__setattr__(self, "_y", [float(v) for v in self.ys])
        object.__setattr__(self, "_m", [[float(v) for v in row] for row in self.ms])

    def __call__(self, x: float, y: float) -> float:
        i, tx = _cell(self._x, x)
        j, ty = _cell(self._y, y)
        m = self._m
        i1 = min(i + 1, len(self._x) - 1)
        j1 = min(j + 1, len(self._y) - 1)
        v = (m[i][j] * (1 - tx) * (1 - ty) + m[i1][j] * tx * (1 - ty)
             + m[i][j1] * (1 - tx) * ty + m[i1][j1] * tx * ty)
        return v if v > 0.0 else 0.0


def _cell(axis: list[float], v: float) -> tuple[int, float]:
    """Left cell index and fraction; fraction < 0 below the grid (extrapolation), capped at
    the top (counts above the largest measured one do not occur: it is the full size)."""
    n = len(axis)
    if n == 1:
        return 0, 0.0
    i = bisect.bisect_right(axis, v) - 1
    i = min(max(i, 0), n - 2)
    t = (v - axis[i]) / (axis[i + 1] - axis[i])
    return i, min(t, 1.0)


# --------------------------------------------------------------------------------------------
# Predictor
# --------------------------------------------------------------------------------------------

def corrected_ms(total: float, a_ms: float, b: float,
                 knots: Sequence[Sequence[float]] = ()) -> float:
    """Whole-model latency from the sum of unit tables.

    With ``knots`` (``(sum, measured)`` points, both increasing): linear interpolation between
    them, and proportional to the nearest end point outside them.  Without (profiles of
    earlier versions): ``a + b * total``.  Either way positive and monotone, as the action
    wall's bisection needs."""
    if knots:
        xs = [k[0] for k in knots]
        if total <= xs[0]:
            return knots[0][1] * total / xs[0]
        if total >= xs[-1]:
            return knots[-1][1] * total / xs[-1]
        i = bisect.bisect_right(xs, total)
        (x0, y0), (x1, y1) = knots[i - 1], knots[i]
        return y0 + (y1 - y0) * (total - x0) / (x1 - x0)
    return a_ms + b * total


@dataclass(frozen=True, eq=False)
class Predictor:
    """Predicted latency (ms) of pruned variants of one analysed model.

    ``source`` is "predicted" (from a model profile), or "predicted-generic" (a generic grid
    profile's per-kind fits, less accurate).  Build with :meth:`from_profile`.
    """

    analysis: Analysis
    units: tuple[Unit, ...]
    tables: tuple[Callable[[float, float], float], ...]
    a_ms: float
    b: float
    source: str
    profile_info: dict[str, Any] = field(default_factory=dict)
    knots: tuple[tuple[float, float], ...] = ()  # see corrected_ms
    _score: list = field(default_factory=list, repr=False)  # lazily computed importance

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any], analysis: Analysis) -> Predictor:
        """Tables of ``profile`` bound to the units of ``analysis``.

        Raises:
            InputError: the profile was built for another model (fingerprint differs) or is
                malformed.
        """
        validate_profile(dict(profile))
        units = tuple(find_units(analysis))
        info = {"device": profile.get("device", {}), "kind": profile["kind"]}
        if profile["kind"] == "generic":
            fits = profile["fits"]
            tables = tuple(_generic_table(u, fits) for u in units)
            return cls(analysis, units, tables, 0.0, 1.0, "predicted-generic", info)
        fp = model_fingerprint(analysis)
        if profile["model"]["fingerprint"] != fp:
            name = profile["model"].get("name") or "another model"
            raise InputError(
                f"latency profile was built for {name} (fingerprint "
                f"{profile['model']['fingerprint'][:12]}), not this model ({fp[:12]}): rebuild "
                "it with `onnx-amc profile --model MODEL` (same --input-shape)")
        by_id = {u["id"]: u for u in profile["units"]}
        missing = [u.id for u in units if u.id not in by_id]
        if missing:
            raise InputError(f"latency profile has no entry for unit '{missing[0]}' "
                             f"({len(missing)} missing): rebuild it")
        tables = tuple(Table.from_samples(by_id[u.id]["samples"]) for u in units)
        corr = profile["correction"]
        return cls(analysis, units, tables, float(corr["a_ms"]), float(corr["b"]), "predicted",
                   info, tuple((float(x), float(y)) for x, y in corr.get("knots", [])))

    def __post_init__(self) -> None:
        # All units' channel classes in one index array: counts for a keep mask are then one
        # bincount instead of two numpy calls per unit (the action wall calls this a lot).
        idx, seg = [], []
        base = np.zeros(2 * len(self.units))
        for i, u in enumerate(self.units):
            for j, cls in enumerate((u.x_cls, u.y_cls if u.y_cls is not None else u.x_cls)):
                if cls is None:
                    base[2 * i + j] = u.x_full if j == 0 else u.y_full
                else:
                    idx.append(cls)
                    seg.append(np.full(cls.size, 2 * i + j))
        object.__setattr__(self, "_idx", np.concatenate(idx) if idx else np.zeros(0, np.int64))
        object.__setattr__(self, "_seg", np.concatenate(seg) if seg else np.zeros(0, np.int64))
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_by_group", _group_matrix(self.analysis, self.units))

    def _sum_from_counts(self, counts_all: np.ndarray) -> float:
        """Sum of unit tables from kept channels per group (all groups, analysis order)."""
        c = (self._base + self._by_group @ counts_all).tolist()
        total = 0.0
        for t, x, y in zip(self.tables, c[0::2], c[1::2], strict=True):
            total += t(x, y)
        return total

    # -- core ------------------------------------------------------------------------------
    def counts(self, keep: np.ndarray | None = None) -> list[tuple[float, float]]:
        """``(x, y)`` of every unit under a keep mask over channel classes."""
        keep = self.analysis.keep_all() if keep is None else keep
        c = self._base + np.bincount(self._seg, weights=keep[self._idx],
                                     minlength=self._base.size)
        flat = c.tolist()
        return list(zip(flat[0::2], flat[1::2], strict=True))

    def unit_ms(self, keep: np.ndarray | None = None) -> np.ndarray:
        """Table value of every unit under a keep mask over channel classes."""
        return np.array([t(x, y) for t, (x, y) in zip(self.tables, self.counts(keep),
                                                      strict=True)])

    def predict_keep(self, keep: np.ndarray | None = None) -> float:
        """Predicted ms of the model pruned by a keep mask over channel classes."""
        total = 0.0
        for t, (x, y) in zip(self.tables, self.counts(keep), strict=True):
            total += t(x, y)
        return corrected_ms(total, self.a_ms, self.b, self.knots)

    def predict_ms(self, keep_counts_by_group: Mapping[str, int] | None = None) -> float:
        """Predicted ms with ``{group id: channels kept}`` (top channels by L1; counts only
        matter except where a group's channels are split between several tensors)."""
        if not keep_counts_by_group:
            return self.predict_keep(None)
        if not self._score:
            self._score.append(importance(self.analysis, "l1"))
        groups = self.analysis.group_by_id
        policy = {}
        for gid, k in keep_counts_by_group.items():
            g = groups.get(gid)
            if g is None:
                raise InputError(f"unknown channel group '{gid}'")
            if not 1 <= int(k) <= g.size:
                raise InputError(f"group '{gid}': keep count {k} outside [1, {g.size}]")
            policy[gid] = int(k) / g.size
        plan = make_plan(self.analysis, policy, self._score[0], round_to=1)
        return self.predict_keep(plan.keep)

    def cost_fn(self, space: LayerSpace) -> Callable[[Mapping[str, float]], float]:
        """A :data:`onnx_amc.search.budget.CostFn` (policy -> predicted ms) over ``space``'s
        rounding; cached per keep-count tuple since the action wall repeats policies."""
        if space.analysis is not self.analysis:
            raise ValueError("the space was built from another analysis than the predictor")
        cache: dict[tuple[int, ...], float] = {}
        sizes = np.array([g.size for g in self.analysis.groups], dtype=np.float64)
        where = np.array([self.analysis.group_by_id[gid].index for gid in space.group_ids],
                         dtype=np.int64)

        def cost(policy: Mapping[str, float]) -> float:
            counts = space.keep_counts(space.ratios_of(policy))
            v = cache.get(counts)
            if v is None:
                if self._by_group is not None:
                    all_counts = sizes.copy()
                    all_counts[where] = counts
                    v = corrected_ms(self._sum_from_counts(all_counts), self.a_ms, self.b,
                                     self.knots)
                else:
                    v = self.predict_keep(space.keep_mask(counts))
                if len(cache) < 100_000:
                    cache[counts] = v
            return v

        return cost


def _group_matrix(analysis: Analysis, units: Sequence[Unit]) -> np.ndarray | None:
    """``M`` with ``(x, y)`` of every unit = ``M @ kept channels per group``, or None if some
    unit sees only part of a group's channels (then counts depend on which channels, and the
    keep mask is needed)."""
    cg = analysis.class_group
    group_classes = [np.sort(g.classes) for g in analysis.groups]
    m = np.zeros((2 * len(units), len(analysis.groups)))
    for i, u in enumerate(units):
        for j, cls in enumerate((u.x_cls, u.y_cls if u.y_cls is not None else u.x_cls)):
            if cls is None:
                continue  # a fixed count: it lives in Predictor._base
            uniq, mult = np.unique(cls, return_counts=True)
            for g in np.unique(cg[uniq]).tolist():
                if g < 0:
                    return None
                sel = cg[uniq] == g
                if not np.array_equal(uniq[sel], group_classes[g]) or \
                        np.unique(mult[sel]).size != 1:
                    return None
                m[2 * i + j, g] += float(mult[sel][0])
    return m


def _generic_table(unit: Unit, fits: Mapping[str, Sequence[float]]) -> Callable:
    """A generic profile's per-kind fit ``ms = c0 + c1 * MACs + c2 * elements``."""
    c = fits.get(unit.kind) or fits.get("other") or (0.0, 0.0, 0.0)

    def table(x: float, y: float) -> float:
        return max(0.0, c[0] + c[1] * unit.macs(x, y) / 1e6 + c[2] * unit.elements(x, y) / 1e6)

    return table


#: MAC-equivalents charged per activation element read or written by the estimate: on CPUs a
#: memory-bound element costs about as much as a handful of MACs in a compute-bound kernel.
ESTIMATE_MACS_PER_ELEMENT = 8.0


def estimate_cost_fn(space: LayerSpace, analysis: Analysis | None = None
                     ) -> Callable[[Mapping[str, float]], float]:
    """FLOPs/memory estimate of latency, relative (the unpruned model costs 1.0).

    ``MACs + ESTIMATE_MACS_PER_ELEMENT x activation elements`` summed over units.  No
    measurement stands behind it: callers must label it "estimated, not measured".
    """
    analysis = space.analysis if analysis is None else analysis
    units = find_units(analysis)

    def raw(keep: np.ndarray) -> float:
        total = 0.0
        for u in units:
            x, y = u.counts(keep)
            total += u.macs(x, y) + ESTIMATE_MACS_PER_ELEMENT * u.elements(x, y)
        return total

    base = raw(analysis.keep_all()) or 1.0
    cache: dict[tuple[int, ...], float] = {}

    def cost(policy: Mapping[str, float]) -> float:
        counts = space.keep_counts(space.ratios_of(policy))
        v = cache.get(counts)
        if v is None:
            v = raw(space.keep_mask(counts)) / base
            cache[counts] = v
        return v

    return cost
