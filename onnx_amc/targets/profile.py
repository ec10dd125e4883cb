"""Build a latency profile on the device that will run the model.

Model profiles (``build_profile(model)``)
-----------------------------------------
1. Cut the model into units (:func:`onnx_amc.targets.predict.find_units`).
2. Pick a few keep counts per prunable group (``levels`` evenly spaced among the counts the
   search can choose at ``round_to`` within ``[lbound, 1]``) and colour the groups so that no unit
   has both channel counts in groups of one colour.  Each *design* gives two colours a level pair
   (the rest stay whole), so every Conv sees the full grid of its (input, output) counts.
3. Prune the model once per design (``graph_ops.apply``: real weights and attributes), lift each
   unit out of it as one branch of a tiny model (all samples of a unit side by side, independent),
   and run it with ONNX Runtime's profiler and the session options of
   :func:`onnx_amc.latency.make_session`.  A unit's time is the sum of its kernels' times (the
   profiler's per-node ``kernel_time``), median over runs.  Layout reorders at a branch's inputs
   and outputs, and the 1x1 MaxPool that feeds each 4-D input in the blocked layout the unit sees
   inside the model, are left out: inside the model they do not exist.
4. Measure a handful of random pruned variants of the whole model (interleaved) and fit
   ``measured = a + b * sum of unit times``.

Generic profiles (``build_profile(None)``)
------------------------------------------
Common Conv / depthwise / Gemm / element-wise shapes, fitted per kind as
``ms = c0 + c1 * MMACs + c2 * M activation elements``; coarser, for models never profiled.

Both record the device (CPU, cores, ORT version, threads, providers, machine, Python) and a
``round_to`` hint: the channel multiple whose rounding-up is cheapest on this device.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from graph_ops import Analysis, analyze, apply, importance, keep_count, make_plan
from graph_ops.shape_eval import evaluate as evaluate_shape
from onnx_amc.errors import InputError
from onnx_amc.latency import measure, measure_interleaved, random_inputs, resolve_providers

from . import remote_bench
from .predict import FORMAT, VERSION, Unit, find_units, model_fingerprint, validate_profile

__all__ = ["build_profile", "device_info", "kernel_times", "round_to_hint"]

logger = logging.getLogger(__name__)

_AUX = "aux__"
_BRANCH = re.compile(r"~(\d+)~")
_MAX_BRANCH_BYTES = 96 << 20  # weights per tiny model; more branches go to another model
_MIN_CAP_S = 1.0  # shortest timing of one whole-model variant against the original
Progress = Callable[[int], None]


# --------------------------------------------------------------------------------------------
# Device and sessions
# --------------------------------------------------------------------------------------------

def device_info(threads: int, providers: Sequence[str]) -> dict[str, Any]:
    """What a latency number depends on besides the model."""
    return {
        "cpu": remote_bench.cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "threads": int(threads),
        "providers": list(providers),
    }


def _session(model: bytes, threads: int, providers: Sequence[str], folder: str
             ) -> ort.InferenceSession:
    """The session options of :func:`onnx_amc.latency.make_session` (shared helper), plus the
    profiler and a weight-less dump of the optimised graph (to tell boundary reorders from the
    unit's own kernels)."""
    opts, names, provider_options = remote_bench.session_options(
        ort, threads, resolve_providers(providers))
    # A unit that cannot run alone (a Reshape whose run-time target shape _Lifter.shape_value
    # cannot evaluate gets an arbitrary one here) is reported once by _time_unit's warning;
    # ORT's own error log would print each failed kernel to stderr as well.
    opts.log_severity_level = 4
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(folder, "prof")
    opts.optimized_model_filepath = os.path.join(folder, "opt.onnx")
    opts.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", "opt.bin")
    opts.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "64")
    return ort.InferenceSession(model, sess_options=opts, providers=names,
                                provider_options=provider_options)


def _attribution(opt: onnx.ModelProto) -> dict[str, int]:
    """Optimised node name -> branch index; nodes left out (aux, boundary reorders) are absent."""
    g = opt.graph
    inputs = {i.name for i in g.input}
    outputs = {o.name for o in g.output}
    producer = {o: n for n in g.node for o in n.output}
    out: dict[str, int] = {}
    for n in g.node:
        if n.name.startswith(_AUX) or any(o.startswith(_AUX) for o in n.output):
            continue
        if n.op_type in ("ReorderInput", "ReorderOutput"):
            src = n.input[0]
            p = producer.get(src)
            if src in inputs or (p is not None and p.name.startswith(_AUX)) or \
                    any(o in outputs for o in n.output) or src.startswith(_AUX):
                continue
        for name in (n.name, *n.output, *n.input):
            m = _BRANCH.search(name)
            if m and not name.startswith(_AUX):
                out[n.name] = int(m.group(1))
                break
    return out


def kernel_times(model: bytes, n_branches: int, *, threads: int = 1,
                 providers: Sequence[str] = ("CPUExecutionProvider",), runs: int = 30,
                 warmup: int = 5, min_time_s: float = 0.3) -> list[float]:
    """Median per-run sum of kernel times (ms) of each branch ``~{i}~`` of a tiny model.

    Runs at least ``runs`` times and at least ``min_time_s`` (after ``warmup`` runs).
    """
    with tempfile.TemporaryDirectory(prefix="onnx_amc_prof_") as folder:
        sess = _session(model, threads, providers, folder)
        opt = onnx.load(os.path.join(folder, "opt.onnx"), load_external_data=False)
        owner = _attribution(opt)
        feeds = random_inputs(sess)
        for _ in range(warmup):
            sess.run(None, feeds)
        start = time.perf_counter()
        done = 0
        while done < runs or time.perf_counter() - start < min_time_s:
            sess.run(None, feeds)
            done += 1
            if done >= 20 * runs:
                break
        path = sess.end_profiling()
        try:
            events = json.loads(Path(path).read_text())
        finally:
            Path(path).unlink(missing_ok=True)
    runs_ev = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")
    runs_ev = runs_ev[warmup:]
    starts = np.array([r[0] for r in runs_ev])
    per = np.zeros((len(runs_ev), n_branches))
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        b = owner.get(e["name"][: -len("_kernel_time")])
        if b is None or b >= n_branches:
            continue
        r = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if 0 <= r < len(runs_ev) and e["ts"] <= runs_ev[r][1]:
            per[r, b] += e["dur"]
    if not len(runs_ev):
        raise RuntimeError("the ONNX Runtime profiler recorded no runs")
    return (np.median(per, axis=0) / 1000.0).tolist()


# --------------------------------------------------------------------------------------------
# Lifting units out of a pruned model
# --------------------------------------------------------------------------------------------

@dataclass
class _Index:
    """Lookups over one pruned model."""

    nodes: dict[str, onnx.NodeProto]  # by first output
    inits: dict[str, onnx.TensorProto]
    consts: dict[str, onnx.NodeProto]

    @classmethod
    def of(cls, model: onnx.ModelProto) -> _Index:
        nodes: dict[str, onnx.NodeProto] = {}
        consts: dict[str, onnx.NodeProto] = {}
        for n in model.graph.node:
            if n.op_type == "Constant" and n.output:
                consts[n.output[0]] = n
            if n.output:
                nodes[n.output[0]] = n
        return cls(nodes, {t.name: t for t in model.graph.initializer}, consts)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - types are a nicety; float is the default
        inferred = model
    g = inferred.graph
    out = {}
    for vi in (*g.input, *g.value_info, *g.output):
        t = vi.type.tensor_type.elem_type
        if t:
            out[vi.name] = t
    return out


class _Lifter:
    """Turns (unit, pruned model, keep mask) into one self-contained branch of a tiny model."""

    def __init__(self, analysis: Analysis) -> None:
        self.a = analysis
        self.types = _elem_types(analysis.model)

    def pruned_shape(self, name: str, keep: np.ndarray) -> list[int] | None:
        view, ctx = self.a.view, self.a.ctx
        shape = view.shape(name)
        if shape is None:
            return None
        dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
        if dims and dims[0] is None:
            dims[0] = 1
        chan = ctx.chan(name)
        if chan is not None and chan.rank == len(dims):
            dims[chan.axis] = int(np.count_nonzero(keep[self.a.raw_to_class[chan.layout]]))
        if any(d is None for d in dims):
            return None
        return [int(d) for d in dims]

    def shape_value(self, name: str, keep: np.ndarray) -> np.ndarray | None:
        """The value of an integer tensor computed from shapes (Shape -> Gather -> Div -> ...),
        evaluated with the channel counts of the pruned design; None when it is not one."""
        etype = self.types.get(name)
        if etype not in (TensorProto.INT64, TensorProto.INT32):
            return None

        def shape_of(t: str) -> tuple[float, ...] | None:
            s = self.pruned_shape(t, keep)
            return None if s is None else tuple(float(d) for d in s)

        r = evaluate_shape(self.a.view, name, shape_of)
        if r is None or not r[1] or np.isnan(r[0]).any():
            return None
        return r[0].astype(helper.tensor_dtype_to_np_dtype(etype))

    def branch(self, unit: Unit, index: _Index, keep: np.ndarray, tag: int
               ) -> tuple[list, list, list, list, int] | None:
        """(nodes, initializers, inputs, outputs, weight bytes) of the branch, or None when the
        unit cannot stand alone (subgraphs, unknown shapes)."""
        view = self.a.view
        p = f"~{tag}~"
        members = []
        for m in unit.nodes:
            n = index.nodes.get(view.nodes[m].output[0])
            if n is None or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                for a in n.attribute):
                return None
            members.append(n)
        produced = {o for n in members for o in n.output if o}
        consumed = {i for n in members for i in n.input if i}
        rename: dict[str, str] = {o: p + o for o in produced}
        nodes: list[onnx.NodeProto] = []
        inits: list[onnx.TensorProto] = []
        inputs: list[onnx.ValueInfoProto] = []
        nbytes = 0
        for name in sorted(consumed - produced):
            if name in index.inits:
                t = onnx.TensorProto()
                t.CopyFrom(index.inits[name])
                t.name = p + name
                inits.append(t)
                nbytes += t.ByteSize()
                rename[name] = t.name
            elif name in index.consts:
                c = onnx.NodeProto()
                c.CopyFrom(index.consts[name])
                c.name = p + "const_" + name
                c.output[0] = p + name
                nodes.append(c)
                rename[name] = p + name
            elif view.const(name) is not None:
                arr = np.ascontiguousarray(view.const(name))
                inits.append(numpy_helper.from_array(arr, p + name))
                nbytes += arr.nbytes
                rename[name] = p + name
            elif (value := self.shape_value(name, keep)) is not None:
                # A shape argument computed at run time (ShuffleNet's channel shuffle reshapes
                # to Shape(x)[1] / 2): a random feed would make the unit fail, so give it the
                # value it has in this pruned design.
                inits.append(numpy_helper.from_array(value, p + name))
                rename[name] = p + name
            else:
                shape = self.pruned_shape(name, keep)
                if shape is None:
                    return None
                etype = self.types.get(name, TensorProto.FLOAT)
                feed = f"{_AUX}{p}in_{name}"
                inputs.append(helper.make_tensor_value_info(feed, etype, shape))
                if len(shape) == 4 and etype == TensorProto.FLOAT and shape[1] % 8 == 0:
                    # Inside the model this tensor comes out of a blocked-layout kernel (NCHWc on
                    # x86): a 1x1 MaxPool gives the unit the same input layout (and lets ORT fuse a
                    # residual Add as it does in the model); its time is not counted.
                    aux = f"{_AUX}{p}{name}"
                    nodes.append(helper.make_node("MaxPool", [feed], [aux], name=aux,
                                                  kernel_shape=[1, 1]))
                    rename[name] = aux
                else:
                    rename[name] = feed
        outputs = []
        for n in members:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = p + (n.name or n.op_type)
            for i, v in enumerate(c.input):
                if v:
                    c.input[i] = rename[v]
            for i, v in enumerate(c.output):
                if v:
                    c.output[i] = rename[v]
            nodes.append(c)
        inner = {i for n in members for i in n.input}
        for n in members:
            for o in n.output:
                if o and o not in inner:
                    outputs.append(helper.make_tensor_value_info(
                        p + o, self.types.get(o, TensorProto.FLOAT), None))
        return nodes, inits, inputs, outputs, nbytes


def _tiny_model(parts: list[tuple[list, list, list, list, int]], like: onnx.ModelProto
                ) -> bytes:
    nodes, inits, inputs, outputs = [], [], [], []
    for n, i, x, y, _ in parts:
        nodes += n
        inits += i
        inputs += x
        outputs += y
    graph = helper.make_graph(nodes, "unit_profile", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=list(like.opset_import))
    model.ir_version = like.ir_version
    return model.SerializeToString()


# --------------------------------------------------------------------------------------------
# Designs
# --------------------------------------------------------------------------------------------

def _group_levels(analysis: Analysis, round_to: int, lbound: float, levels: int
                  ) -> dict[int, list[int]]:
    """Keep counts to sample per prunable group: ``levels`` evenly spaced search options."""
    out = {}
    for g in analysis.prunable_groups:
        lo = max(1, math.ceil(lbound * g.size - 1e-9))
        opts = sorted({keep_count(g.size, k / g.size, round_to, g.blocks)
                       for k in range(lo, g.size + 1)})
        if len(opts) <= levels:
            out[g.index] = opts
        else:
            idx = np.unique(np.round(np.linspace(0, len(opts) - 1, levels)).astype(int))
            out[g.index] = [opts[i] for i in idx]
    return out


def _colours(analysis: Analysis, units: Sequence[Unit]) -> dict[int, int]:
    """Greedy colouring of prunable groups: a unit's input and output groups differ in colour."""
    cg = analysis.class_group
    prunable = {g.index for g in analysis.prunable_groups}
    adj: dict[int, set[int]] = {g: set() for g in prunable}
    for u in units:
        if u.x_cls is None or u.y_cls is None:
            continue
        gx = set(np.unique(cg[u.x_cls]).tolist()) & prunable
        gy = set(np.unique(cg[u.y_cls]).tolist()) & prunable
        for a in gx:
            for b in gy:
                if a != b:
                    adj[a].add(b)
                    adj[b].add(a)
    colour: dict[int, int] = {}
    for g in sorted(prunable):
        used = {colour[n] for n in adj[g] if n in colour}
        colour[g] = next(c for c in range(len(prunable) + 1) if c not in used)
    return colour


def _designs(colour: Mapping[int, int], levels: Mapping[int, list[int]], n_levels: int
             ) -> list[dict[int, int]]:
    """Level index per group for each design (level -1 = whole)."""
    k = max(colour.values(), default=-1) + 1
    seen: set[tuple] = set()
    out: list[dict[int, int]] = []

    def add(assign: dict[int, int]) -> None:
        d = {g: assign.get(c, -1) for g, c in colour.items()}
        key = tuple(sorted(d.items()))
        if key not in seen:
            seen.add(key)
            out.append(d)

    if k <= 1:
        for i in range(n_levels):
            add({0: i})
    for c1 in range(k):
        for c2 in range(c1 + 1, k):
            for i in range(n_levels):
                for j in range(n_levels):
                    add({c1: i, c2: j})
    return out


def _design_policy(analysis: Analysis, design: Mapping[int, int],
                   levels: Mapping[int, list[int]]) -> dict[str, float]:
    policy = {}
    for g in analysis.prunable_groups:
        lv = design.get(g.index, -1)
        opts = levels[g.index]
        k = g.size if lv < 0 else opts[min(lv, len(opts) - 1)]
        if k < g.size:
            policy[g.id] = k / g.size
    return policy


# --------------------------------------------------------------------------------------------
# Whole-model correction
# --------------------------------------------------------------------------------------------

def fit_correction(sums: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """Least squares ``measured = a + b * sum`` with ``a >= 0``, ``b > 0`` (else the best
    one-parameter fit).  Profiles predict through :func:`fit_knots` (the relation bends);
    the line is kept in them for reading, and profiles of earlier versions predict by it."""
    s = np.asarray(sums, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    if s.size >= 2 and np.ptp(s) > 0:
        b, a = np.polyfit(s, m, 1)
        if a >= 0 and b > 0:
            return float(a), float(b)
    b = float((s @ m) / (s @ s)) if (s @ s) > 0 else 1.0
    if b > 0:
        return 0.0, b
    return float(max(0.0, np.mean(m - s))), 1.0


def fit_knots(sums: Sequence[float], measured: Sequence[float]) -> list[list[float]]:
    """The whole-model points as knots for :func:`~onnx_amc.targets.predict.corrected_ms`:
    sorted by sum, equal sums averaged, measured values made non-decreasing by isotonic
    regression (pool adjacent violators), so that timing noise cannot make a smaller model
    predict slower."""
    by_sum: dict[float, list[float]] = {}
    for s, m in zip(sums, measured, strict=True):
        if s > 0 and m > 0:  # rounded as stored, so stored knots stay strictly increasing
            by_sum.setdefault(round(float(s), 6), []).append(float(m))
    xs = sorted(by_sum)
    blocks: list[list[float]] = []  # [mean, weight] of pooled runs
    for x in xs:
        blocks.append([float(np.mean(by_sum[x])), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, w2), (m1, w1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    ys = [m for m, w in blocks for _ in range(int(w))]
    return [[x, y] for x, y in zip(xs, ys, strict=True)]


def _random_policy(analysis: Analysis, rng: np.random.Generator, lo: float,
                   round_to: int, hi: float = 1.0) -> dict[str, float]:
    """Every prunable group at a keep ratio drawn from ``U(lo, hi)``."""
    policy = {}
    for g in analysis.prunable_groups:
        k = keep_count(g.size, float(rng.uniform(lo, hi)), round_to, g.blocks)
        if k < g.size:
            policy[g.id] = k / g.size
    return policy


# --------------------------------------------------------------------------------------------
# round_to hint
# --------------------------------------------------------------------------------------------

def round_to_hint(threads: int = 1, providers: Sequence[str] = ("CPUExecutionProvider",),
                  *, lo: int = 33, hi: int = 96, hw: int = 14) -> dict[str, Any]:
    """Which channel multiple is fast here: 3x3 Convs with c -> c channels for c in
    ``[lo, hi]``; for each multiple m, the mean of time(ceil_m(c)) / time(c) over c in
    ``[lo, hi - 32]`` (below 1: rounding up to m is *faster* than the exact count).  The hint is
    the m with the lowest mean (ties within 2% go to the smaller m)."""
    rng = np.random.default_rng(0)
    cs = list(range(lo, hi + 1))
    parts = []
    for t, c in enumerate(cs):
        p = f"~{t}~"
        w = numpy_helper.from_array(rng.standard_normal((c, c, 3, 3)).astype(np.float32),
                                    p + "w")
        b = numpy_helper.from_array(np.zeros(c, np.float32), p + "b")
        feed = f"{_AUX}{p}x0"
        nodes = [helper.make_node("MaxPool", [feed], [f"{_AUX}{p}x"], name=f"{_AUX}{p}x",
                                  kernel_shape=[1, 1]),
                 helper.make_node("Conv", [f"{_AUX}{p}x", p + "w", p + "b"], [p + "c"],
                                  name=p + "conv", pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", [p + "c"], [p + "y"], name=p + "relu")]
        parts.append((nodes, [w, b],
                      [helper.make_tensor_value_info(feed, TensorProto.FLOAT, [1, c, hw, hw])],
                      [helper.make_tensor_value_info(p + "y", TensorProto.FLOAT, None)], 0))
    like = helper.make_model(helper.make_graph([], "x", [], []),
                             opset_imports=[helper.make_opsetid("", 17)])
    times = kernel_times(_tiny_model(parts, like), len(cs), threads=threads,
                         providers=providers, runs=15, min_time_s=0.5)
    t_of = dict(zip(cs, times, strict=True))
    scores = {}
    for m in (1, 2, 4, 8, 16, 32):
        ratios = [t_of[-(-c // m) * m] / t_of[c] for c in range(lo, hi - 31) if t_of[c] > 0]
        scores[m] = float(np.mean(ratios)) if ratios else 1.0
    best = min(scores.values())
    hint = min(m for m, s in scores.items() if s <= best * 1.02)
    return {"round_to": hint, "score_by_multiple": {str(m): round(s, 4) for m, s in
                                                    scores.items()},
            "method": f"3x3 Conv c->c at {hw}x{hw}, c in [{lo}, {hi}]: mean time(ceil_m(c)) / "
                      "time(c)"}


# --------------------------------------------------------------------------------------------
# Generic grid
# --------------------------------------------------------------------------------------------

def _generic_cases() -> list[tuple[str, int, int, int, int]]:
    """(kind, c_in, c_out, kernel, hw) of common CNN layer shapes."""
    cases = []
    for hw in (56, 28, 14, 7):
        for c in (16, 32, 64, 128, 256):
            if c * hw > 128 * 28 * 2:
                continue
            cases.append(("conv", c, c, 3, hw))
            cases.append(("conv", c, 2 * c, 1, hw))
            cases.append(("conv", 2 * c, c, 1, hw))
            cases.append(("dwconv", c * 2, c * 2, 3, hw))
            cases.append(("eltwise", c, c, 1, hw))
    for k, n in ((256, 10), (512, 1000), (1024, 1000), (128, 128), (512, 512)):
        cases.append(("gemm", k, n, 1, 1))
    return cases


def _generic_part(t: int, kind: str, cin: int, cout: int, k: int, hw: int,
                  rng: np.random.Generator):
    p = f"~{t}~"
    feed = f"{_AUX}{p}x0"
    if kind == "gemm":
        w = numpy_helper.from_array(rng.standard_normal((cout, cin)).astype(np.float32), p + "w")
        node = helper.make_node("Gemm", [feed, p + "w"], [p + "y"], name=p + "gemm", transB=1)
        return ([node], [w], [helper.make_tensor_value_info(feed, TensorProto.FLOAT, [1, cin])],
                [helper.make_tensor_value_info(p + "y", TensorProto.FLOAT, None)], 0)
    nodes = [helper.make_node("MaxPool", [feed], [f"{_AUX}{p}x"], name=f"{_AUX}{p}x",
                              kernel_shape=[1, 1])]
    x = f"{_AUX}{p}x"
    inits = []
    if kind == "eltwise":
        nodes.append(helper.make_node("Relu", [x], [p + "y"], name=p + "relu"))
    else:
        g = cin if kind == "dwconv" else 1
        w = rng.standard_normal((cout, cin // g, k, k)).astype(np.float32)
        inits = [numpy_helper.from_array(w, p + "w"),
                 numpy_helper.from_array(np.zeros(cout, np.float32), p + "b")]
        pad = k // 2
        nodes.append(helper.make_node("Conv", [x, p + "w", p + "b"], [p + "c"], name=p + "conv",
                                      pads=[pad] * 4, group=g))
        nodes.append(helper.make_node("Relu", [p + "c"], [p + "y"], name=p + "relu"))
    return (nodes, inits, [helper.make_tensor_value_info(feed, TensorProto.FLOAT,
                                                         [1, cin, hw, hw])],
            [helper.make_tensor_value_info(p + "y", TensorProto.FLOAT, None)], 0)


def _generic_fits(threads: int, providers: Sequence[str], seed: int
                  ) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    cases = _generic_cases()
    parts = [_generic_part(t, *c, rng) for t, c in enumerate(cases)]
    like = helper.make_model(helper.make_graph([], "x", [], []),
                             opset_imports=[helper.make_opsetid("", 17)])
    times = kernel_times(_tiny_model(parts, like), len(parts), threads=threads,
                         providers=providers, runs=15, min_time_s=1.0)
    rows = []
    for (kind, cin, cout, k, hw), ms in zip(cases, times, strict=True):
        sp = hw * hw
        if kind == "gemm":
            macs, elems = cin * cout, cin + cout
        elif kind == "dwconv":
            macs, elems = k * k * cout * sp, (cin + cout) * sp
        elif kind == "conv":
            macs, elems = k * k * cin * cout * sp, (cin + cout) * sp
        else:
            macs, elems = 0, 2 * cin * sp
        rows.append({"kind": kind, "c_in": cin, "c_out": cout, "kernel": k, "hw": hw,
                     "mmacs": macs / 1e6, "melements": elems / 1e6, "ms": ms})
    fits: dict[str, list[float]] = {}
    for kind in ("conv", "dwconv", "gemm", "eltwise"):
        sel = [r for r in rows if r["kind"] == kind]
        a = np.array([[1.0, r["mmacs"], r["melements"]] for r in sel])
        y = np.array([r["ms"] for r in sel])
        coef = _nnls(a, y)
        fits[kind] = [float(v) for v in coef]
    fits["gconv"] = fits["conv"]
    fits["convtranspose"] = fits["conv"]
    fits["matmul"] = fits["gemm"]
    fits["other"] = fits["eltwise"]
    return fits, rows


def _nnls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    try:
        from scipy.optimize import nnls

        return nnls(a, y)[0]
    except ImportError:  # pragma: no cover - scipy is optional
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        return np.maximum(coef, 0.0)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

def build_profile(
    model: str | os.PathLike[str] | bytes | onnx.ModelProto | Analysis | None = None,
    *,
    threads: int = 1,
    providers: Sequence[str] | None = None,
    time_budget_s: float = 600.0,
    round_to: int = 8,
    lbound: float = 0.2,
    levels: int = 5,
    variants: int = 16,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    progress: bool | Progress = False,
    seed: int = 0,
    name: str | None = None,
) -> dict[str, Any]:
    """Measure a latency profile on this machine (see the module docstring).

    Args:
        model: the model to profile (path, bytes, ModelProto or a ready ``Analysis``), or None
            for a generic grid.
        threads, providers: ONNX Runtime settings, as the latency budget will use them.
        time_budget_s: soft cap; when the unit tables run late, fewer runs per tiny model, and
            fewer whole-model variants (at least 2) when less time is left than they need.
        round_to, lbound: the search's rounding and lower keep bound (which counts to sample).
        levels: keep counts sampled per group (the grid is ``levels x levels`` per Conv).
        variants: random pruned whole-model variants for the correction fit (plus the original),
            spread from heavily to lightly pruned; the profile's correction points list the
            ones measured.
        progress: True for a tqdm bar, or a callable receiving increments.

    Raises:
        InputError: unknown provider, unreadable model, dynamic dims without ``input_shapes``.
    """
    t0 = time.perf_counter()
    providers = list(resolve_providers(providers))
    if threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "kind": "generic" if model is None else "model",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(threads, providers),
        "settings": {"threads": threads, "providers": providers, "round_to": round_to,
                     "lbound": lbound, "levels": levels, "variants": variants, "seed": seed},
    }
    doc["round_to_hint"] = round_to_hint(threads, providers)
    if model is None:
        fits, rows = _generic_fits(threads, providers, seed)
        doc["fits"] = fits
        doc["samples"] = rows
        doc["build_seconds"] = round(time.perf_counter() - t0, 2)
        return validate_profile(doc)

    analysis = model if isinstance(model, Analysis) else analyze(model, input_shapes=input_shapes)
    _build_model_profile(doc, analysis, threads=threads, providers=providers,
                         time_budget_s=time_budget_s - (time.perf_counter() - t0),
                         round_to=round_to, lbound=lbound, levels=levels, variants=variants,
                         progress=progress, seed=seed, name=name)
    doc["build_seconds"] = round(time.perf_counter() - t0, 2)
    return validate_profile(doc)


def _progress_bar(progress: bool | Progress, total: int, desc: str):
    if callable(progress):
        return None, progress
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="step", leave=False)
        return bar, bar.update
    return None, lambda n: None


def _build_model_profile(doc: dict[str, Any], analysis: Analysis, *, threads: int,
                         providers: list[str], time_budget_s: float, round_to: int,
                         lbound: float, levels: int, variants: int,
                         progress: bool | Progress, seed: int, name: str | None) -> None:
    t0 = time.perf_counter()
    for name in analysis.view.graph_inputs:
        shape = analysis.view.shape(name) or ()
        if any(not (isinstance(d, int) and d > 0) for d in shape[1:]):
            raise InputError(f"model input '{name}' has dynamic dimensions {list(shape)}: pass "
                             "--input-shape NAME=D1,D2,... (the profile is for fixed shapes)")
    units = find_units(analysis)
    if not units:
        raise InputError("the model has no op that carries channels: nothing to profile")
    score = importance(analysis, "l1")
    glevels = _group_levels(analysis, round_to, lbound, levels)
    colour = _colours(analysis, units)
    if max(colour.values(), default=0) >= 2:  # 3+ colours: 3 level pairs per grid, fewer levels
        levels = min(levels, 4)
        glevels = _group_levels(analysis, round_to, lbound, levels)
    designs = _designs(colour, glevels, levels) if glevels else [{}]
    lifter = _Lifter(analysis)
    samples: dict[int, dict[tuple[int, int], tuple]] = {i: {} for i in range(len(units))}
    bar, tick = _progress_bar(progress, len(designs) + len(units) + 1, "profile")
    try:
        # 1. Lift every unit's distinct (x, y) out of the design models.
        for design in designs:
            plan = make_plan(analysis, _design_policy(analysis, design, glevels), score,
                             round_to=1)
            pruned = None
            for ui, u in enumerate(units):
                xy = u.counts(plan.keep)
                if xy in samples[ui]:
                    continue
                if pruned is None:
                    pruned = _Index.of(apply(analysis, plan))
                part = lifter.branch(u, pruned, plan.keep, len(samples[ui]))
                samples[ui][xy] = part
            tick(1)
        # 2. Time each unit's branches in one tiny model (chunks of bounded weight size).
        # Two passes, a few seconds apart per unit, keeping the lower median of each sample:
        # other processes only ever make a kernel slower, and a burst of load during one
        # pass must not become a step in the table.
        table: list[list[list[float]]] = []
        lifted_at = time.perf_counter() - t0
        per_unit = max(0.05, (time_budget_s * 0.6 - lifted_at) / max(1, 2 * len(units)))
        for ui in range(len(units)):
            table.append(_time_unit(samples[ui], analysis.model, threads, providers,
                                    min_time_s=min(0.3, per_unit * 0.8)))
            tick(1)
        passes = 1
        if time.perf_counter() - t0 < time_budget_s * 0.45:
            passes = 2
            for ui in range(len(units)):
                again = _time_unit(samples[ui], analysis.model, threads, providers,
                                   min_time_s=min(0.3, per_unit * 0.8))
                for row, new in zip(table[ui], again, strict=True):
                    if new[2] > 0:
                        row[2] = min(row[2], new[2]) if row[2] > 0 else new[2]
        # 3. Whole-model variants for the correction.
        rng = np.random.default_rng(seed)
        from .predict import Table

        tables = [Table.from_samples(s) for s in table]
        # Keep windows that slide over [lbound, 1], so that the knots span everything a search
        # visits: half the variants draw from [lbound, hi] with hi spread up to 1 (heavily
        # pruned models: a budget of 0.5 of the latency lands at a third of the MACs on
        # MobileNetV2), half from [lo, 1] with lo spread from lbound towards 1 (lightly pruned
        # ones). With only the first half, no point lay between 0.48-0.81 of the original's
        # latency and the original itself (benchmarks/results/prediction_8dd9855_avx512_vm.md).
        # Each whole-model run below takes up to a second or more (the cap's floor): with less
        # time left than the requested variants need, measure fewer, spread over the same keep
        # range, rather than overrun a short budget several times over (a 6-second profile of
        # the default model took 17 s with its 16 variants).
        left = time_budget_s - (time.perf_counter() - t0)
        variants = min(variants, max(2, int(left // _MIN_CAP_S) - 1))
        low = (variants + 1) // 2
        bounds = [(lbound, lbound + (1.0 - lbound) * (i + 1) / low) for i in range(low)]
        bounds += [(lbound + (1.0 - lbound) * (i + 1) / (variants - low + 1), 1.0)
                   for i in range(variants - low)]
        policies = [{}] + [_random_policy(analysis, rng, lo, round_to, hi) for lo, hi in bounds]
        plans = [make_plan(analysis, p, score, round_to=1) for p in policies]
        models = [apply(analysis, pl).SerializeToString() for pl in plans]
        # Each variant interleaved with the original (onnx_amc.latency.measure_interleaved):
        # on a shared machine the load changes over minutes, and the ratio variant/original of
        # one interleaved run cancels it.  The ratios are scaled by the original's quietest
        # median (other processes only ever add time), which gives drift-free points to fit.
        left = time_budget_s - (time.perf_counter() - t0)
        cap = float(min(6.0, max(_MIN_CAP_S, left / max(1, len(models)))))
        ratios = [1.0]
        feeds = _pinned_feeds(analysis, seed)
        originals = [measure(models[0], feeds, threads=threads, providers=providers,
                             time_cap_s=cap).median_ms]
        for m in models[1:]:
            o, v = measure_interleaved([models[0], m], feeds, threads=threads,
                                       providers=providers, time_cap_s=cap)
            originals.append(o.median_ms)
            ratios.append(v.median_ms / o.median_ms)
        base_ms = min(originals)
        measured = [r * base_ms for r in ratios]
        tick(1)
    finally:
        if bar is not None:
            bar.close()
    sums = [float(sum(t(*u.counts(pl.keep)) for u, t in zip(units, tables, strict=True)))
            for pl in plans]
    a, b = fit_correction(sums, measured)
    knots = fit_knots(sums, measured)
    doc["model"] = {"name": name, "fingerprint": model_fingerprint(analysis),
                    "input_shapes": {k: list(v) for k, v in analysis.input_shapes.items()},
                    "units": len(units), "designs": len(designs), "timing_passes": passes,
                    "variants_measured": variants,
                    "levels": levels, "colours":
                    max(colour.values(), default=-1) + 1}
    doc["units"] = [{"id": u.id, "kind": u.kind, "ops": list(u.ops),
                     "x_full": u.x_full, "y_full": u.y_full if u.y_cls is not None else None,
                     "samples": s} for u, s in zip(units, table, strict=True)]
    doc["correction"] = {
        "a_ms": round(a, 6), "b": round(b, 6),
        "knots": [[x, round(y, 6)] for x, y in knots],
        "points": [{"sum_units_ms": round(s, 5), "measured_ms": round(m, 5),
                    "ratio_to_original": round(r, 5)}
                   for s, m, r in zip(sums, measured, ratios, strict=True)],
        "original_medians_ms": [round(v, 5) for v in originals],
        "fit": "predictions interpolate linearly between the knots (sum of unit tables, "
               "measured ms: the points below, sorted, made non-decreasing) and scale "
               "proportionally outside them; a_ms + b * sum is the least-squares line over the "
               "same points, for reading. Points: the original and "
               f"{variants} random pruned variants, half with keep ratios from [lbound, hi] "
               "(hi rising to 1), half from [lo, 1] (lo rising from lbound towards 1); each "
               "variant's latency is its median ratio to the original in one interleaved run "
               "times the original's lowest median",
    }


def _pinned_feeds(analysis: Analysis, seed: int) -> dict[str, np.ndarray]:
    """Random inputs at the analysed shapes: the pruned variants keep the model's dynamic input
    dims, which ``--input-shape`` pins for the analysis (a leading symbolic batch becomes 1)."""
    specs = []
    for name, vi in analysis.view.graph_inputs.items():
        shape = analysis.view.shape(name) or ()
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        specs.append((name, dims, dtype.name))
    return remote_bench.random_feeds(specs, seed)


def _time_unit(samples: Mapping[tuple[int, int], tuple | None], like: onnx.ModelProto,
               threads: int, providers: list[str], min_time_s: float) -> list[list[float]]:
    """``[[x, y, ms], ...]`` for one unit; samples that cannot stand alone get 0 ms."""
    keys = list(samples)
    parts = [(k, samples[k]) for k in keys]
    out: list[list[float]] = [[float(k[0]), float(k[1]), 0.0] for k in keys]
    chunk: list[tuple[int, tuple]] = []
    size = 0

    def flush() -> None:
        if not chunk:
            return
        renum = [_retag(part, i) for i, (_, part) in enumerate(chunk)]
        try:
            ms = kernel_times(_tiny_model(renum, like), len(renum), threads=threads,
                              providers=providers, runs=10, min_time_s=min_time_s)
        except Exception as exc:  # noqa: BLE001 - an op ORT refuses alone counts as 0 ms
            logger.warning("unit not measurable alone: %s", exc)
            ms = [0.0] * len(chunk)
        for (pos, _), v in zip(chunk, ms, strict=True):
            out[pos][2] = round(float(v), 6)
        chunk.clear()

    for pos, (_, part) in enumerate(parts):
        if part is None:
            continue
        if chunk and size + part[4] > _MAX_BRANCH_BYTES:
            flush()
            size = 0
        chunk.append((pos, part))
        size += part[4]
    flush()
    return out


def _retag(part: tuple, new: int) -> tuple:
    """Rename branch ``~{old}~`` to ``~{new}~`` (parts are lifted with their sample index)."""
    nodes, inits, inputs, outputs, nbytes = part
    old = None
    for n in nodes:
        m = _BRANCH.search(n.name)
        if m:
            old = m.group(0)
            break
    if old is None or old == f"~{new}~":
        return part
    sub = f"~{new}~"

    def r(s: str) -> str:
        return s.replace(old, sub, 1) if s else s

    out_nodes = []
    for n in nodes:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.name = r(c.name)
        for i, v in enumerate(c.input):
            c.input[i] = r(v)
        for i, v in enumerate(c.output):
            c.output[i] = r(v)
        out_nodes.append(c)
    out_inits = []
    for t in inits:
        c = onnx.TensorProto()
        c.CopyFrom(t)
        c.name = r(c.name)
        out_inits.append(c)
    out_in = [helper.make_tensor_value_info(r(v.name), v.type.tensor_type.elem_type,
                                            [d.dim_value for d in v.type.tensor_type.shape.dim])
              for v in inputs]
    out_out = [helper.make_tensor_value_info(r(v.name), v.type.tensor_type.elem_type, None)
               for v in outputs]
    return out_nodes, out_inits, out_in, out_out, nbytes
