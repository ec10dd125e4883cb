"""Weight reconstruction after channel pruning, and adaptive BatchNorm re-estimation.

Why: removing channels shifts every layer that reads them. AMC (He et al. 2018) follows He et
al. 2017 and re-fits each such *consumer* by least squares so that, fed with the pruned
network's own activations, it reproduces the original network's output on calibration data:

    min_{W, b} || X' W + b - Y ||^2 + lam || W - W0 ||^2

``X'`` is the consumer's input in the *pruned* model (it already carries the upstream pruning
error, which is the point: the layer learns to compensate it), ``Y`` is the consumer's output in
the *original* model restricted to the kept output channels, ``W0`` the pruned weights. Two
choices beyond the paper, both for robustness on small calibration sets:

* the bias is fitted too (unregularised, via centring). Most exporters fold BatchNorm into the
  Conv, so the mean of what the removed channels contributed can only go into the bias;
* the ridge term pulls towards the pruned weights ``W0`` rather than zero, so an under-determined
  fit degrades to "keep the pruned weights" instead of shrinking them. ``lam`` is ``ridge``
  times the mean diagonal of the centred ``X'^T X'`` (scale-free). Because ``(W0, b0)`` is a
  feasible point, the fit error never exceeds the error before fitting.

Convs are fitted through im2col rows at sampled output positions (AMC samples 10 per image),
honouring pads (including asymmetric and ``auto_pad``), strides and dilations; grouped Convs per
group; Gemm (any ``transB``, ``alpha``/``beta``) and MatMul with a constant 2-D weight directly.
Consumers are processed in waves in topological order: a wave holds every pending consumer
whose input does not depend on another pending one, so each later layer sees the already
re-fitted earlier ones (``sequential``, as in ThiNet/He et al.) at one pruned-model pass per
wave. ``one-shot`` fits all consumers from a single pass; on the default model sequential is
measurably better, hence the default (see the module tests and the report of ``reconstruct``).

:func:`reestimate_bn` is EagleEye's adaptive BN: every BatchNormalization's running mean and
variance are set to the statistics of its input over the calibration data, in waves as above so
later BNs see re-estimated earlier ones.

Only numpy and onnxruntime are used. Fits keep only sampled rows (or per-channel moments for
BN), bounded by ``max_samples`` x unknowns per layer; between waves, the activations that later
waves still read are kept whole (up to ``FRONTIER_BYTES``, else recomputed), so that each wave's
pass starts there instead of at the model inputs: on a 17-layer MobileNet-like classifier this
cut reconstruction from 2.9 s to 0.7 s per candidate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graph_ops import Analysis
from graph_ops.edits import kept_positions
from graph_ops.graph import model_shell
from graph_ops.plan import PrunePlan
from onnx_amc.latency import make_session

__all__ = ["NodeReport", "ReconstructionReport", "reconstruct", "reestimate_bn"]

logger = logging.getLogger(__name__)

Mode = Literal["sequential", "one-shot"]

# Ridge used when a fit has fewer sampled rows than unknowns (relative, like ``ridge``).
UNDERDETERMINED_RIDGE = 1e-1


@dataclass(frozen=True)
class NodeReport:
    """What happened to one consumer. Errors are ||X'W+b-Y||^2 / ||Y||^2 on the fit rows,
    ``err_before`` with the pruned weights, ``err_after`` with the fitted ones."""

    node: str
    op_type: str
    status: Literal["fitted", "skipped"]
    reason: str = ""
    rows: int = 0
    unknowns: int = 0
    ridge: float = 0.0
    err_before: float | None = None
    err_after: float | None = None


@dataclass
class ReconstructionReport:
    """Per-node outcome plus how the fit was run (JSON-ready through :meth:`as_dict`)."""

    mode: Mode
    samples: int
    seconds: float = 0.0
    passes: int = 0  # ORT passes over the calibration data (original + pruned waves)
    nodes: list[NodeReport] = field(default_factory=list)

    @property
    def fitted(self) -> list[NodeReport]:
        return [n for n in self.nodes if n.status == "fitted"]

    @property
    def skipped(self) -> list[NodeReport]:
        return [n for n in self.nodes if n.status == "skipped"]

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "samples": self.samples, "seconds": self.seconds,
                "passes": self.passes, "nodes": [asdict(n) for n in self.nodes]}


# --------------------------------------------------------------------------------------------
# Model plumbing
# --------------------------------------------------------------------------------------------

def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}({node.output[0]})"


class _Store:
    """Where the constants of a model live (initializer or Constant node) and who reads what,
    so fitted values are written back in place without renaming anything."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        g = model.graph
        self.inits = {t.name: i for i, t in enumerate(g.initializer)}
        self.const_nodes = {n.output[0]: n for n in g.node
                            if n.op_type == "Constant" and n.domain in ("", "ai.onnx")
                            and n.output}
        self.readers: dict[str, int] = {}
        for n in g.node:
            for name in n.input:
                if name:
                    self.readers[name] = self.readers.get(name, 0) + 1
        self.outputs = {o.name for o in g.output}
        self.inputs = {i.name for i in g.input}
        self.by_out = {n.output[0]: n for n in g.node if n.output}
        self.names = set(self.inits) | set(self.inputs) | {o for n in g.node for o in n.output}

    def get(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.model.graph.initializer[self.inits[name]])
        node = self.const_nodes.get(name)
        if node is not None:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def private(self, name: str) -> bool:
        """A stored constant that exactly one node input reads (safe to overwrite)."""
        return (self.get(name) is not None and self.readers.get(name, 0) == 1
                and name not in self.outputs)

    def set(self, name: str, value: np.ndarray) -> None:
        g = self.model.graph
        if name in self.inits:
            g.initializer[self.inits[name]].CopyFrom(numpy_helper.from_array(value, name))
            if name in self.inputs:  # old IRs declare weights as inputs: keep the shape true
                for vi in g.input:
                    if vi.name == name:
                        dims = vi.type.tensor_type.shape.dim
                        del dims[:]
                        for d in value.shape:
                            dims.add().dim_value = int(d)
            return
        node = self.const_nodes[name]
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("value",
                                                    numpy_helper.from_array(value, name)))

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def add(self, base: str, value: np.ndarray) -> str:
        """A new initializer (declared as an input too for IR < 4, which requires it)."""
        name = self.fresh(base)
        g = self.model.graph
        g.initializer.append(numpy_helper.from_array(value, name))
        self.inits[name] = len(g.initializer) - 1
        if self.model.ir_version < 4:
            g.input.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
            self.inputs.add(name)
        self.readers[name] = 1
        return name


def _has_subgraphs(graph: onnx.GraphProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for node in graph.node for a in node.attribute)


def _needed_nodes(graph: onnx.GraphProto, names: Sequence[str],
                  given: Mapping[str, Any] | None = None) -> list[onnx.NodeProto]:
    """The nodes that ``names`` depend on, in graph order, stopping at ``given`` tensors."""
    needed = {n for n in names if not given or n not in given}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i and (not given or i not in given))
    return kept[::-1]


def _with_outputs(model: onnx.ModelProto, names: Sequence[str],
                  given: Mapping[str, np.ndarray] | None = None) -> bytes:
    """Serialized copy that computes just ``names`` (untyped outputs: ORT infers them), with
    ``given`` tensors fed as extra inputs (sample arrays: their element type and trailing dims
    are declared, the leading dim left free).

    Nodes that ``names`` do not depend on are dropped; graphs with control-flow subgraphs are
    kept whole (their outer-scope reads are implicit) and take no ``given`` tensors."""
    m = model_shell(model)
    src, g = model.graph, m.graph
    whole = _has_subgraphs(src)
    nodes = list(src.node) if whole else _needed_nodes(src, names, given)
    read = {i for node in nodes for i in node.input} | set(names)
    used = [t for t in src.initializer if whole or t.name in read]
    dropped = {t.name for t in src.initializer} - {t.name for t in used}
    g.node.extend(nodes)
    g.input.extend(i for i in src.input if i.name not in dropped)  # old IR lists weights too
    for name, value in (given or {}).items():
        if name in read:
            g.input.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), [None, *value.shape[1:]]))
    g.initializer.extend(used)
    g.sparse_initializer.extend(src.sparse_initializer)
    g.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names))
    return m.SerializeToString()


def _fixed_batch(session: Any) -> int | None:
    fixed = {a.shape[0] for a in session.get_inputs()
             if a.shape and isinstance(a.shape[0], int) and a.shape[0] > 0}
    return fixed.pop() if len(fixed) == 1 else None


def _batches(model: onnx.ModelProto, names: Sequence[str], inputs: Mapping[str, np.ndarray],
             batch: int, threads: int, given: Mapping[str, Sequence[np.ndarray]] | None = None
             ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Run ``model`` over ``inputs`` in batches and yield (number of real samples, outputs).

    Models with a fixed leading dimension are run in chunks of that size, the last padded by
    repeating its final sample (padded rows are left in the arrays; callers use ``real``).
    ``given`` tensors (one array per batch, from an earlier run of the same batches) are fed
    instead of being computed."""
    first = {k: v[0] for k, v in given.items()} if given else None
    session = make_session(_with_outputs(model, names, first), threads)
    n = len(next(iter(inputs.values())))
    fixed = _fixed_batch(session)
    step = fixed or batch
    feeds_names = [a.name for a in session.get_inputs()]
    for b, start in enumerate(range(0, n, step)):
        stop = min(start + step, n)
        feeds = {}
        for name in feeds_names:
            if given and name in given:
                feeds[name] = given[name][b]
                continue
            part = inputs[name][start:stop]
            if fixed is not None and stop - start < fixed:
                part = np.concatenate([part, np.repeat(part[-1:], fixed - (stop - start), 0)])
            feeds[name] = part
        outs = session.run(list(names), feeds)
        yield stop - start, dict(zip(names, outs, strict=True))


# Activations kept between waves (see _Frontier); a tensor that does not fit is recomputed.
FRONTIER_BYTES = 512 << 20


class _Frontier:
    """The activations that later waves still read, so that each wave's pass runs only the
    nodes between them and its own inputs.

    Why: sequential fitting makes one pruned-model pass per wave, and starting every pass at the
    model inputs cost a whole network pass per layer on chain-like networks. Every tensor a
    wave's pass computes is final: a later wave's layer is never upstream of an earlier wave's
    inputs (that is how waves are formed), and earlier waves are already fitted. So the tensors
    that nodes not yet computed will read are kept, up to ``max_bytes`` in all, and fed to the
    next pass as inputs. Results are the same as whole passes, up to ORT's choice of kernels.
    Graphs with control-flow subgraphs always run whole.
    """

    def __init__(self, inputs: Mapping[str, np.ndarray], batch: int, threads: int,
                 max_bytes: int | None = None) -> None:
        self.inputs, self.batch, self.threads = inputs, batch, threads
        self.max_bytes = FRONTIER_BYTES if max_bytes is None else max_bytes
        self.final: set[str] = set()
        self.kept: dict[str, list[np.ndarray]] = {}
        self.reals: list[int] = []

    def batches(self, model: onnx.ModelProto, names: Sequence[str]
                ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        graph = model.graph
        if _has_subgraphs(graph):
            yield from _batches(model, names, self.inputs, self.batch, self.threads)
            return
        todo = [n for n in dict.fromkeys(names) if n not in self.kept]
        nodes = _needed_nodes(graph, todo, self.kept)
        read = {i for node in nodes for i in node.input}
        given = {t: v for t, v in self.kept.items() if t in read}
        produced = {o for node in nodes for o in node.output if o}
        self.final |= produced
        later = {i for node in graph.node if any(o and o not in self.final for o in node.output)
                 for i in node.input}
        for t in [t for t in self.kept if t not in later and t not in names]:
            del self.kept[t]  # no node left to read it (``given`` still holds this pass's)
        extra = sorted(t for t in produced if t in later and t not in todo)
        if not todo:
            for b, real in enumerate(self.reals):
                yield real, {n: self.kept[n][b] for n in names}
            return
        fresh: dict[str, list[np.ndarray]] = {t: [] for t in [*todo, *extra]}
        reals: list[int] = []
        for b, (real, outs) in enumerate(_batches(model, [*todo, *extra], self.inputs,
                                                  self.batch, self.threads, given)):
            reals.append(real)
            for t, v in outs.items():
                fresh[t].append(v)
            yield real, {n: outs[n] if n in outs else self.kept[n][b] for n in names}
        self.reals = reals
        used = sum(a.nbytes for v in self.kept.values() for a in v)
        for t in [*todo, *extra]:
            if t not in later:
                continue
            size = sum(a.nbytes for a in fresh[t])
            if used + size <= self.max_bytes:
                self.kept[t] = fresh[t]
                used += size


def _waves(model: onnx.ModelProto, nodes: Sequence[str], inputs_of: Sequence[str]
           ) -> list[list[int]]:
    """Group items (identified by their node's first output, read through ``inputs_of``) so
    that no item depends on another item of the same or a later group."""
    bit = {out: 1 << i for i, out in enumerate(nodes)}
    reach: dict[str, int] = {}
    for node in model.graph.node:
        m = 0
        for name in node.input:
            m |= reach.get(name, 0)
        if node.output and node.output[0] in bit:
            m |= bit[node.output[0]]
        for o in node.output:
            reach[o] = m
    upstream = [reach.get(name, 0) for name in inputs_of]
    pending = (1 << len(nodes)) - 1
    waves: list[list[int]] = []
    while pending:
        ready = [i for i in range(len(nodes))
                 if pending >> i & 1 and not (upstream[i] & pending & ~(1 << i))]
        if not ready:  # cannot happen in a DAG; fall back to one at a time
            ready = [next(i for i in range(len(nodes)) if pending >> i & 1)]
        waves.append(ready)
        for i in ready:
            pending &= ~(1 << i)
    return waves


# --------------------------------------------------------------------------------------------
# Reconstruction jobs
# --------------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Job:
    """One consumer to re-fit, in the pruned model's geometry."""

    label: str
    op: str
    x: str
    y: str
    out_pos: np.ndarray  # kept output channels, positions in the original output
    groups: int = 1
    # conv geometry
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()  # begins then ends; resolved once the input shape is known
    auto_pad: str = "NOTSET"
    trans_a: bool = False
    unknowns: int = 1  # weights per output channel after pruning (+ bias): sets the row count
    picks: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    ys: list[np.ndarray] = field(default_factory=list)
    xs: list[np.ndarray] = field(default_factory=list)


def _conv_pads(job: _Job, in_sp: tuple[int, ...]) -> tuple[list[int], list[int]]:
    d = len(job.kernel)
    if job.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for i in range(d):
            out = -(-in_sp[i] // job.strides[i])
            span = (job.kernel[i] - 1) * job.dilations[i] + 1
            total = max((out - 1) * job.strides[i] + span - in_sp[i], 0)
            small = total // 2
            begins.append(total - small if job.auto_pad == "SAME_LOWER" else small)
            ends.append(small if job.auto_pad == "SAME_LOWER" else total - small)
        return begins, ends
    if job.auto_pad == "VALID":
        return [0] * d, [0] * d
    pads = list(job.pads) or [0] * (2 * d)
    return pads[:d], pads[d:]


ROWS_PER_UNKNOWN = 4


def _pick(rng: np.random.Generator, n: int, per_item: int, k: int) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """``k`` distinct positions out of ``per_item`` for each of ``n`` items."""
    if k >= per_item:
        item = np.repeat(np.arange(n), per_item)
        pos = np.tile(np.arange(per_item), n)
        return item, pos
    pos = np.argsort(rng.random((n, per_item)), axis=1)[:, :k]
    return np.repeat(np.arange(n), k), pos.reshape(-1)


def _target_rows(job: _Job, y: np.ndarray, real: int, rng: np.random.Generator,
                 per_image: int) -> None:
    """Sample rows of the original output (kept channels only) and remember where."""
    y = y[:real]
    if job.op == "Conv":
        flat = y.reshape(real, y.shape[1], -1)
        item, pos = _pick(rng, real, flat.shape[2], per_image)
        rows = flat[item, :, pos]  # (R, C)
    else:
        rows_all = y.reshape(-1, y.shape[-1]) if job.op == "MatMul" else y
        per = rows_all.shape[0] // real if rows_all.shape[0] % real == 0 else rows_all.shape[0]
        n_items = rows_all.shape[0] // per
        item, pos = _pick(rng, n_items, per, per_image)
        rows = rows_all[item * per + pos]
        item, pos = item * per + pos, np.zeros(0, dtype=np.int64)
    job.picks.append((item, pos))
    job.ys.append(np.ascontiguousarray(rows[:, job.out_pos], dtype=np.float32))


def _input_rows(job: _Job, x: np.ndarray, picks: tuple[np.ndarray, np.ndarray],
                out_sp: tuple[int, ...] | None) -> np.ndarray:
    """Rows of the pruned input matching the sampled outputs: im2col patches for Convs."""
    item, pos = picks
    if job.op != "Conv":
        if job.op == "Gemm" and job.trans_a:
            x = x.T
        return np.ascontiguousarray(x.reshape(-1, x.shape[-1])[item], dtype=np.float32)
    assert out_sp is not None
    in_sp = tuple(x.shape[2:])
    begins, ends = _conv_pads(job, in_sp)
    xp = np.pad(x[: int(item.max()) + 1 if item.size else 0],
                [(0, 0), (0, 0)] + list(zip(begins, ends, strict=True)))
    coords = np.unravel_index(pos, out_sp)
    offsets = np.array(list(np.ndindex(*job.kernel)), dtype=np.int64).reshape(-1, len(job.kernel))
    idx = tuple(coords[i][:, None] * job.strides[i] + offsets[None, :, i] * job.dilations[i]
                for i in range(len(job.kernel)))
    return _gather(xp, item, idx)


def _gather(xp: np.ndarray, item: np.ndarray, idx: tuple[np.ndarray, ...]) -> np.ndarray:
    """(R, C*K) patches: xp[item, :, idx...] with kernel positions minor, matching a Conv
    weight [C_out, C, *k] reshaped to [C_out, C*K]."""
    moved = np.moveaxis(xp, 1, -1)  # (N, *sp, C)
    patches = moved[(item[:, None], *idx)]  # (R, K, C)
    r, _, c = patches.shape
    return np.ascontiguousarray(np.swapaxes(patches, 1, 2).reshape(r, -1), dtype=np.float32)


def _effective(node: onnx.NodeProto, job: _Job, store: _Store
               ) -> tuple[np.ndarray, np.ndarray] | str:
    """The consumer's current linear map as (W, b [C_out]): Conv: W [C_out, C_in/g * K];
    Gemm/MatMul: W [K, N]. Or the reason it cannot be fitted."""
    w = store.get(node.input[1])
    if w is None:
        return "weight is not a stored constant in the pruned model"
    if store.readers.get(node.input[1], 0) != 1:
        return "weight is shared by several nodes"
    w = w.astype(np.float64)
    if job.op == "Conv":
        co = w.shape[0]
        bname = node.input[2] if len(node.input) > 2 else ""
        b = store.get(bname) if bname else np.zeros(co)
        if b is None:
            return "bias is not a stored constant"
        return w.reshape(co, -1), np.asarray(b, dtype=np.float64).reshape(co)
    if job.op == "Gemm":
        alpha = float(_attr(node, "alpha", 1.0))
        beta = float(_attr(node, "beta", 1.0))
        wk = (w.T if _attr(node, "transB", 0) else w) * alpha
        n = wk.shape[1]
        cname = node.input[2] if len(node.input) > 2 else ""
        if not cname:
            return wk, np.zeros(n)
        c = store.get(cname)
        if c is None:
            return "bias is not a stored constant"
        if c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1):
            return f"Gemm bias of shape {list(c.shape)} is not per output channel"
        return wk, np.broadcast_to(np.asarray(c, dtype=np.float64).reshape(-1), (n,)) * beta
    return w, np.zeros(w.shape[1])


def _solve(x: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: np.ndarray, ridge: float
           ) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """Ridge towards ``w0`` with an unregularised bias. x [R, U], y [R, C], w0 [U, C].
    Returns (w, b, lam, sum of squared residuals before, after)."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    gram = xc.T @ xc
    scale = float(np.mean(np.diag(gram))) if gram.size else 0.0
    lam = ridge * (scale if scale > 0 else 1.0)
    lhs = gram + lam * np.eye(gram.shape[0])
    rhs = xc.T @ yc + lam * w0
    try:
        w = np.linalg.solve(lhs, rhs)
    except np.linalg.LinAlgError:
        w = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    b = ym - xm @ w
    before = float(np.sum((x @ w0 + b0 - y) ** 2))
    after = float(np.sum((x @ w + b - y) ** 2))
    return w, b, lam, before, after


def _fit(job: _Job, store: _Store, ridge: float) -> NodeReport:
    node = store.by_out.get(job.y)
    if node is None:
        return NodeReport(job.label, job.op, "skipped", "node not found in the pruned model")
    eff = _effective(node, job, store)
    if isinstance(eff, str):
        return NodeReport(job.label, job.op, "skipped", eff)
    w_eff, b_eff = eff
    x = np.concatenate(job.xs) if job.xs else np.zeros((0, 0), np.float32)
    y = np.concatenate(job.ys) if job.ys else np.zeros((0, 0), np.float32)
    job.xs.clear()
    job.ys.clear()
    rows = x.shape[0]
    if rows < 2:
        return NodeReport(job.label, job.op, "skipped", f"only {rows} sampled rows")
    g = job.groups
    co = y.shape[1]
    if job.op == "Conv":
        per_in = x.shape[1] // g
        per_out = co // g
        unknowns = per_in + 1
    else:
        per_in, per_out, unknowns = x.shape[1], co, x.shape[1] + 1
    if w_eff.shape[0 if job.op == "Conv" else 1] != co or \
            (job.op == "Conv" and w_eff.shape[1] != per_in) or \
            (job.op != "Conv" and w_eff.shape[0] != per_in):
        return NodeReport(job.label, job.op, "skipped",
                          f"weight shape {list(w_eff.shape)} does not match the data")
    rel = ridge
    reason = ""
    if rows < unknowns:
        rel = max(ridge, UNDERDETERMINED_RIDGE)
        reason = f"under-determined ({rows} rows < {unknowns} unknowns): ridge raised to {rel:g}"
    new_w = np.empty_like(w_eff)
    new_b = np.empty_like(b_eff)
    before = after = 0.0
    for gi in range(g):
        cols = slice(gi * per_in, (gi + 1) * per_in)
        outs = slice(gi * per_out, (gi + 1) * per_out)
        w0 = w_eff[outs].T if job.op == "Conv" else w_eff
        w, b, _, e0, e1 = _solve(x[:, cols], y[:, outs], w0, b_eff[outs], rel)
        before += e0
        after += e1
        if job.op == "Conv":
            new_w[outs] = w.T
        else:
            new_w = w
        new_b[outs] = b
    energy = float(np.sum(y.astype(np.float64) ** 2)) or 1.0
    if not np.all(np.isfinite(new_w)) or not np.all(np.isfinite(new_b)) or after > before:
        return NodeReport(job.label, job.op, "skipped", "the fit did not improve the error",
                          rows, unknowns, rel, before / energy, before / energy)
    _write(node, job, store, new_w, new_b)
    return NodeReport(job.label, job.op, "fitted", reason, rows, unknowns, rel,
                      before / energy, after / energy)


def _write(node: onnx.NodeProto, job: _Job, store: _Store, w_eff: np.ndarray,
           b_eff: np.ndarray) -> None:
    """Store the fitted map in the node's own parameterisation, adding a bias if needed."""
    old_w = store.get(node.input[1])
    assert old_w is not None
    dtype = old_w.dtype
    if job.op == "Conv":
        store.set(node.input[1], w_eff.reshape(old_w.shape).astype(dtype))
        _set_bias(store, node, 2, b_eff.astype(dtype))
    elif job.op == "Gemm":
        alpha = float(_attr(node, "alpha", 1.0))
        w = w_eff / alpha
        store.set(node.input[1], (w.T if _attr(node, "transB", 0) else w).astype(dtype))
        beta = float(_attr(node, "beta", 1.0))
        has_c = len(node.input) > 2 and node.input[2]
        if not has_c or beta == 0.0:
            if beta != 1.0:
                _set_attr(node, "beta", 1.0)
            beta = 1.0
        _set_bias(store, node, 2, (b_eff / beta).astype(dtype))
    else:
        store.set(node.input[1], w_eff.astype(dtype))
        if np.any(b_eff != 0):
            _matmul_bias(store, node, b_eff.astype(dtype))


def _set_bias(store: _Store, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
    name = node.input[index] if len(node.input) > index else ""
    old = store.get(name) if name else None
    if name and store.private(name) and old is not None and old.ndim <= 1:
        store.set(name, value)
        return
    new = store.add(f"{node.output[0]}__recon_bias", value)
    while len(node.input) <= index:
        node.input.append("")
    node.input[index] = new


def _matmul_bias(store: _Store, node: onnx.NodeProto, value: np.ndarray) -> None:
    """MatMul has no bias input: fold into a following private ``Add(out, const)`` if there
    is one, else insert an Add that produces the MatMul's original output name."""
    g = store.model.graph
    out = node.output[0]
    readers = [n for n in g.node if out in n.input]
    if len(readers) == 1 and out not in store.outputs and readers[0].op_type == "Add":
        add = readers[0]
        other = add.input[1] if add.input[0] == out else add.input[0]
        c = store.get(other)
        if c is not None and store.private(other) and c.shape in ((value.size,),
                                                                    (1, value.size)):
            store.set(other, (c + value.reshape(c.shape)).astype(c.dtype))
            return
    inner = store.fresh(f"{out}__recon_matmul")
    bias = store.add(f"{out}__recon_bias", value)
    node.output[0] = inner
    add_node = helper.make_node("Add", [inner, bias], [out], name=store.fresh(f"{out}__recon_add"))
    pos = next(i for i, n in enumerate(g.node) if n is node or (n.output and n.output[0] == inner))
    g.node.insert(pos + 1, add_node)


def _prepare(analysis: Analysis, plan: PrunePlan, work: onnx.ModelProto
             ) -> tuple[list[_Job], list[NodeReport]]:
    keep_raw = analysis.raw_keep(plan.keep)
    by_out = {n.output[0]: n for n in work.graph.node if n.output}
    jobs: list[_Job] = []
    skipped: list[NodeReport] = []
    seen: set[int] = set()
    for node_index, in_layout in analysis.ctx.consumers:
        if node_index in seen:
            continue
        seen.add(node_index)
        if kept_positions(in_layout, keep_raw).size == in_layout.size:
            continue
        orig = analysis.view.nodes[node_index]
        label = _label(orig)
        op = orig.op_type

        def skip(reason: str, op: str = op, label: str = label) -> None:
            skipped.append(NodeReport(label, op, "skipped", reason))

        if op == "ConvTranspose":
            skip("ConvTranspose: each output mixes several input patches; not reconstructed")
            continue
        node = by_out.get(orig.output[0])
        if node is None:
            skip("node not found in the pruned model")
            continue
        if len(node.input) < 2 or not analysis.view.is_const(orig.input[1]):
            skip("weight is not constant")
            continue
        chan = analysis.ctx.state.get(orig.output[0])
        if chan is None:
            skip("output channels unknown")
            continue
        out_pos = kept_positions(chan.layout, keep_raw)
        job = _Job(label, op, node.input[0], node.output[0], out_pos)
        kept_in = kept_positions(in_layout, keep_raw).size
        if op == "Conv":
            w = analysis.view.const(orig.input[1])
            d = w.ndim - 2
            job.groups = int(_attr(node, "group", 1))
            job.kernel = tuple(int(k) for k in w.shape[2:])
            job.strides = tuple(_attr(node, "strides", [1] * d))
            job.dilations = tuple(_attr(node, "dilations", [1] * d))
            job.pads = tuple(_attr(node, "pads", [0] * (2 * d)))
            ap = _attr(node, "auto_pad", b"NOTSET")
            job.auto_pad = ap.decode() if isinstance(ap, bytes) else str(ap)
            job.unknowns = kept_in // max(job.groups, 1) * int(np.prod(job.kernel)) + 1
            if chan.axis != 1:
                skip("Conv output channels off axis 1")
                continue
        elif op == "Gemm":
            job.trans_a = bool(_attr(node, "transA", 0))
            job.unknowns = kept_in + 1
        elif op != "MatMul":
            skip(f"{op} is not reconstructed")
            continue
        else:
            job.unknowns = kept_in + 1
        jobs.append(job)
    return jobs, skipped


def reconstruct(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    analysis: Analysis,
    plan: PrunePlan,
    calib_inputs: Mapping[str, np.ndarray],
    *,
    ridge: float = 1e-3,
    positions: int = 10,
    max_samples: int = 20000,
    mode: Mode = "sequential",
    batch: int = 64,
    threads: int = 1,
    seed: int = 0,
) -> tuple[onnx.ModelProto, ReconstructionReport]:
    """Re-fit every consumer whose input channels were pruned (see the module docstring).

    Args:
        original: the unpruned model (the one ``analysis`` was built from).
        pruned: ``apply(analysis, plan)``; not modified (a fitted copy is returned).
        calib_inputs: model inputs of the reconstruction split (sample axis first).
        ridge: Tikhonov weight relative to the mean diagonal of the centred X'^T X', pulling
            towards the pruned weights.
        positions: sampled output positions per sample (AMC: 10); rows of a Gemm input count
            as one position each.
        max_samples: cap on rows per layer (positions per sample are lowered to respect it,
            but every sample contributes at least one row).
        mode: ``sequential`` (each wave sees earlier fitted layers) or ``one-shot``.
        batch: samples per ORT run (models with a fixed batch size use theirs).
        threads: ORT intra-op threads.
        seed: position sampling seed.

    Returns:
        The reconstructed model (same inputs, outputs and tensor names; a bias is added where
        a consumer had none; a MatMul bias becomes an Add after it) and a per-node report.
    """
    t0 = time.perf_counter()
    if not calib_inputs:
        raise ValueError("calib_inputs is empty")
    n = len(next(iter(calib_inputs.values())))
    work = onnx.ModelProto()
    work.CopyFrom(pruned)
    report = ReconstructionReport(mode, n)
    jobs, skipped = _prepare(analysis, plan, work)
    report.nodes.extend(skipped)
    for s in skipped:
        logger.info("reconstruct: skip %s: %s", s.node, s.reason)
    if not jobs or n == 0:
        report.seconds = time.perf_counter() - t0
        return work, report
    per_image = max(1, min(positions, max_samples // max(n, 1)))

    # Targets and sample positions from one pass of the original model.
    rng = np.random.default_rng(seed)
    out_shapes: dict[int, tuple[int, ...]] = {}
    for real, outs in _batches(original, [j.y for j in jobs], calib_inputs, batch, threads):
        for i, job in enumerate(jobs):
            y = outs[job.y]
            out_shapes[i] = tuple(y.shape[2:])
            # AMC's 10 positions per image, raised where a layer has more unknowns than that
            # gives rows (3x3 convs with many inputs): under-determined fits generalise badly.
            need = -(-ROWS_PER_UNKNOWN * job.unknowns // max(n, 1))
            per_job = max(per_image, min(need, max_samples // max(n, 1)))
            _target_rows(job, y, real, rng, per_job)
    report.passes += 1

    waves = [list(range(len(jobs)))] if mode == "one-shot" else \
        _waves(work, [j.y for j in jobs], [j.x for j in jobs])
    results: dict[int, NodeReport] = {}
    frontier = _Frontier(calib_inputs, batch, threads)
    for wave in waves:
        names = list(dict.fromkeys(jobs[i].x for i in wave))
        for b, (_, outs) in enumerate(frontier.batches(work, names)):
            for i in wave:
                job = jobs[i]
                job.xs.append(_input_rows(job, outs[job.x], job.picks[b],
                                          out_shapes.get(i)))
        report.passes += 1
        store = _Store(work)
        for i in wave:
            results[i] = _fit(jobs[i], store, ridge)
            r = results[i]
            if r.status == "fitted":
                logger.info("reconstruct: %s fitted on %d rows (%d unknowns): rel. error "
                            "%.4g -> %.4g%s", r.node, r.rows, r.unknowns, r.err_before,
                            r.err_after, f" [{r.reason}]" if r.reason else "")
            else:
                logger.info("reconstruct: skip %s: %s", r.node, r.reason)
    report.nodes.extend(results[i] for i in range(len(jobs)))
    report.seconds = time.perf_counter() - t0
    logger.info("reconstruct: %d fitted, %d skipped, %s, %d passes, %.2fs",
                len(report.fitted), len(report.skipped), mode, report.passes, report.seconds)
    return work, report


# --------------------------------------------------------------------------------------------
# Adaptive BatchNorm
# --------------------------------------------------------------------------------------------

def reestimate_bn(
    pruned: onnx.ModelProto,
    calib_inputs: Mapping[str, np.ndarray],
    *,
    batch: int = 64,
    threads: int = 1,
    mode: Mode = "sequential",
) -> onnx.ModelProto:
    """Adaptive BN (EagleEye, Li et al. 2020): set each BatchNormalization's running mean and
    variance to the per-channel statistics (over every axis but 1) of its input on the
    calibration data. The variance is the population variance, which is what BN normalises
    with at training time.

    Why: after pruning, the stored statistics describe the unpruned network's activations; the
    pruned network's differ, and fixing them costs only forward passes. ``sequential`` (the
    default) processes BNs in dependency waves so later ones see re-estimated earlier ones;
    ``one-shot`` uses a single pass. Nodes in training mode, with computed or shared
    statistics are left as they are (logged).
    """
    work = onnx.ModelProto()
    work.CopyFrom(pruned)
    store = _Store(work)
    bns: list[onnx.NodeProto] = []
    for node in work.graph.node:
        if node.op_type != "BatchNormalization" or node.domain not in ("", "ai.onnx"):
            continue
        label = _label(node)
        if _attr(node, "training_mode", 0):
            logger.info("reestimate_bn: skip %s: training_mode=1", label)
            continue
        if len(node.input) < 5 or not all(store.get(node.input[i]) is not None for i in (3, 4)):
            logger.info("reestimate_bn: skip %s: mean/var are not stored constants", label)
            continue
        if not all(store.private(node.input[i]) for i in (3, 4)) or node.input[3] == node.input[4]:
            logger.info("reestimate_bn: skip %s: mean/var shared with other nodes", label)
            continue
        bns.append(node)
    if not bns or not calib_inputs:
        return work
    waves = [list(range(len(bns)))] if mode == "one-shot" else \
        _waves(work, [b.output[0] for b in bns], [b.input[0] for b in bns])
    frontier = _Frontier(calib_inputs, batch, threads)
    for wave in waves:
        names = list(dict.fromkeys(bns[i].input[0] for i in wave))
        stats: dict[str, tuple[float, np.ndarray, np.ndarray]] = {}
        for real, outs in frontier.batches(work, names):
            for name in names:
                x = np.asarray(outs[name][:real], dtype=np.float64)
                x = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1) if x.ndim > 1 else x[None]
                cnt = float(x.shape[1])
                mean = x.mean(1)
                m2 = ((x - mean[:, None]) ** 2).sum(1)
                if name in stats:  # Chan et al. parallel merge: stable, no E[x^2]-E[x]^2
                    c0, mu0, s0 = stats[name]
                    tot = c0 + cnt
                    delta = mean - mu0
                    stats[name] = (tot, mu0 + delta * cnt / tot,
                                   s0 + m2 + delta ** 2 * c0 * cnt / tot)
                else:
                    stats[name] = (cnt, mean, m2)
        for i in wave:
            node = bns[i]
            cnt, mean, m2 = stats[node.input[0]]
            old_mean = store.get(node.input[3])
            old_var = store.get(node.input[4])
            assert old_mean is not None and old_var is not None
            if mean.size != old_mean.size:
                logger.info("reestimate_bn: skip %s: %d channels measured, %d stored",
                            _label(node), mean.size, old_mean.size)
                continue
            var = m2 / max(cnt, 1.0)
            store.set(node.input[3], mean.reshape(old_mean.shape).astype(old_mean.dtype))
            store.set(node.input[4], var.reshape(old_var.shape).astype(old_var.dtype))
            logger.debug("reestimate_bn: %s: mean shift %.4g, var ratio %.4g", _label(node),
                         float(np.abs(mean - old_mean.reshape(-1)).mean()),
                         float(np.mean(var / np.maximum(old_var.reshape(-1), 1e-12))))
    logger.info("reestimate_bn: %d BatchNormalization nodes re-estimated in %d waves",
                len(bns), len(waves))
    return work

