"""Typed Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from graph_ops import (
    DEFAULT_ROUND_TO,
    Analysis,
    PolicyError,
    analyze,
    apply,
    count,
    group_macs,
    importance,
    make_plan,
    prunable_mac_share,
)
from graph_ops.plan import PrunePlan

from .errors import InputError

__all__ = ["inspect", "prune", "PruneResult", "load_policy", "InspectReport"]

ModelLike = str | os.PathLike[str] | bytes | onnx.ModelProto


@dataclass(frozen=True)
class InspectReport:
    """What ``inspect`` found: channel groups and whole-model counts (JSON-ready)."""

    model: str
    opset: int
    nodes: int
    params: int
    macs: int | None
    prunable_mac_share: float | None
    groups: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "opset": self.opset, "nodes": self.nodes,
            "params": self.params, "macs": self.macs,
            "prunable_mac_share": self.prunable_mac_share,
            "groups": self.groups,
        }


def _name(model: ModelLike) -> str:
    return str(model) if isinstance(model, str | os.PathLike) else "<in-memory model>"


def inspect(model: ModelLike | Analysis, *,
            input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> InspectReport:
    """Channel groups of a model, which are prunable, and why the others are frozen."""
    a = model if isinstance(model, Analysis) else analyze(model, input_shapes=input_shapes)
    c = count(a)
    gm = group_macs(a)
    total = c.macs or 0
    groups = []
    for g in a.groups:
        entry: dict[str, Any] = {
            "index": g.index, "id": g.id, "channels": g.size,
            "producers": list(g.producers), "consumers": list(g.consumers),
            "macs": gm.get(g.index, 0) if c.macs is not None else None,
            "mac_share": (gm.get(g.index, 0) / total) if total else None,
            "prunable": g.prunable,
        }
        if g.blocks > 1:
            entry["blocks"] = g.blocks
        if g.prunable:
            entry["keep"] = 1.0
        else:
            entry["frozen_reason"] = g.frozen
            entry["frozen_node"] = g.frozen_node
        groups.append(entry)
    return InspectReport(
        model=_name(model) if not isinstance(model, Analysis) else "<analysis>",
        opset=a.view.opset, nodes=len(a.view.nodes), params=c.params, macs=c.macs,
        prunable_mac_share=prunable_mac_share(a), groups=groups,
    )


def load_policy(path: str | os.PathLike[str]) -> dict[str, float | list[int]]:
    """Read a policy JSON: a mapping id -> ratio/indices, ``{"policy": {...}}``, or a
    ``groups`` list as written by ``inspect --json`` and ``compress`` (``kept_indices`` wins
    over ``keep``)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: no such policy file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not a JSON policy ({exc.__class__.__name__})") from None
    if isinstance(data, dict) and isinstance(data.get("policy"), dict):
        data = data["policy"]
    elif isinstance(data, dict) and "groups" in data:
        groups = data["groups"]
        if isinstance(groups, list):  # inspect --json and compress documents
            data = {}
            for g in groups:
                if not isinstance(g, dict) or "id" not in g:
                    raise InputError(f"{p}: every entry of 'groups' needs an 'id'")
                if "kept_indices" in g:
                    data[str(g["id"])] = g["kept_indices"]
                elif "keep" in g:
                    data[str(g["id"])] = g["keep"]
        elif isinstance(groups, dict):
            data = groups
        else:
            raise InputError(f"{p}: 'groups' must be a list of groups (as inspect --json "
                             "writes) or a mapping of group ids")
    if not isinstance(data, dict):
        raise InputError(f"{p}: a policy must map group ids to keep ratios or index lists")
    if not data:  # a wrong file, not a request: an unchanged copy would pass for a result
        raise InputError(f"{p}: the policy names no group, so nothing would be pruned")
    for k, v in data.items():
        ok = isinstance(v, int | float) and not isinstance(v, bool) or (
            isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                        for i in v))
        if not ok:
            raise InputError(f"{p}: group '{k}': expected a keep ratio or a list of indices")
    return data


@dataclass(frozen=True)
class PruneResult:
    """The pruned model and the counts before and after; with calibration data, also the
    held-out metrics of the original and the result, and the reconstruction report."""

    model: onnx.ModelProto
    plan: PrunePlan
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    policy: dict[str, float | list[int]] = field(default_factory=dict)
    metrics_before: Any | None = None
    metrics_after: Any | None = None
    reconstruction: Any | None = None
    bn_reestimated: bool = False
    analysis: Any | None = field(default=None, repr=False)  # of the input, for reports


def prune(
    model: ModelLike | Analysis,
    *,
    keep: float | None = None,
    policy: Mapping[str, float | list[int]] | None = None,
    criterion: str = "l1",
    round_to: int = DEFAULT_ROUND_TO,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    calib: str | os.PathLike[str] | Any | None = None,
    reconstruct: bool = False,
    bn_reestimate: bool = False,
    calib_size: int | None = None,
    image_options: Any | None = None,
    threads: int = 1,
    seed: int = 0,
) -> PruneResult:
    """Prune with one keep ratio for every prunable group (``keep``) or a per-group policy.

    With ``calib``, the data is split (seeded) into a reconstruction part and a disjoint
    evaluation part; ``reconstruct`` re-fits the consumers of pruned channels by least squares
    on the first, ``bn_reestimate`` re-estimates BatchNormalization statistics there (where BN
    nodes exist), and both models are scored on the second."""
    if (reconstruct or bn_reestimate) and calib is None:
        raise InputError("--reconstruct and --bn-reestimate need --calib DATA")
    if (keep is None) == (policy is None):
        raise InputError("give exactly one of keep= or policy=")
    if policy is not None and not policy:
        # as load_policy says for files: an unchanged copy would pass for a pruned result
        raise InputError("the policy names no group, so nothing would be pruned")
    if keep is not None and (isinstance(keep, bool) or not 0.0 < float(keep) <= 1.0
                             or math.isnan(float(keep))):
        raise InputError(f"--keep must be in (0, 1], got {keep}")
    if round_to < 1:
        raise InputError(f"--round-to must be a positive integer, got {round_to}")
    if criterion not in ("l1", "l2"):
        raise InputError(f"--criterion must be l1 or l2, got {criterion}")
    a = model if isinstance(model, Analysis) else analyze(model, input_shapes=input_shapes)
    if keep is not None and float(keep) < 1.0 and not a.prunable_groups:
        raise InputError("the model has no prunable channel group (see onnx-amc inspect): "
                         "--keep would write an unchanged copy")
    pol = dict(policy) if policy is not None else {g.id: float(keep) for g in a.prunable_groups}
    try:
        plan = make_plan(a, pol, importance(a, criterion), round_to=round_to)
    except PolicyError as exc:
        raise InputError(str(exc)) from None
    before = count(a)
    after = count(a, plan.keep)
    pruned = apply(a, plan)
    if calib is None:
        return PruneResult(pruned, plan, before.params, after.params, before.macs,
                           after.macs, pol, analysis=a)
    from .data import CalibrationSet, split_calibration
    from .evaluate import Evaluator

    data = calib if isinstance(calib, CalibrationSet) else load_calib(
        a.model, calib, calib_size=calib_size, image_options=image_options, seed=seed)
    if len(data) < 2:
        raise InputError("calibration data needs at least 2 samples (fit and evaluation)")
    fit, held_out = split_calibration(data, seed=seed)
    report = None
    has_bn = any(n.op_type == "BatchNormalization" for n in pruned.graph.node)
    # Not implied by reconstruct: measured neutral on in-distribution digits and harmful on
    # out-of-distribution calibration images (benchmarks/RESULTS.md, bench_recovery.py).
    do_bn = has_bn and bool(bn_reestimate)
    if reconstruct:
        from .reconstruct import reconstruct as fit_weights

        pruned, report = fit_weights(a.model, pruned, a, plan, fit.inputs, threads=threads,
                                     seed=seed)
    if do_bn:
        from .reconstruct import reestimate_bn

        pruned = reestimate_bn(pruned, fit.inputs, threads=threads)
    ev = Evaluator(a.model, held_out, threads=threads)
    return PruneResult(pruned, plan, before.params, after.params, before.macs, after.macs, pol,
                       ev.reference_metrics, ev.evaluate(pruned), report, bool(do_bn),
                       analysis=a)


@dataclass(frozen=True)
class EvaluateResult:
    """Metrics of a model on calibration data (fidelity against ``reference`` if given) and its
    measured latency; ``reference_latency`` when a reference was measured alongside."""

    metrics: Any
    latency: Any
    reference_latency: Any | None = None
    reference_metrics: Any | None = None  # the reference's own metrics on the same data


def load_calib(model: ModelLike, calib: str | os.PathLike[str], *, calib_size: int | None = None,
               image_options: Any | None = None, seed: int = 0):
    """Calibration data checked against ``model``'s inputs before any work starts."""
    from graph_ops import load_model

    from .data import input_specs_from_model, load_calibration

    m = load_model(model)
    return load_calibration(calib, input_specs_from_model(m), size=calib_size,
                            image_options=image_options, seed=seed)


def evaluate(model: ModelLike, *, calib: str | os.PathLike[str] | Any,
             reference: ModelLike | None = None, threads: int = 1,
             calib_size: int | None = None, image_options: Any | None = None,
             measure_latency: bool = True,
             providers: Any | None = None) -> EvaluateResult:
    """Accuracy (with labels) and fidelity to ``reference`` (if given), plus ORT latency."""
    from graph_ops import load_model

    from .data import CalibrationSet
    from .evaluate import Evaluator
    from .latency import measure_interleaved

    m = load_model(model)
    ref = load_model(reference) if reference is not None else None
    data = calib if isinstance(calib, CalibrationSet) else load_calib(
        ref if ref is not None else m, calib, calib_size=calib_size,
        image_options=image_options)
    ref_metrics = None
    if ref is not None:
        ev = Evaluator(ref, data, threads=threads)
        metrics, ref_metrics = ev.evaluate(m), ev.reference_metrics
    else:
        metrics = Evaluator(m, data, threads=threads).reference_metrics
    if not measure_latency:
        return EvaluateResult(metrics, None, None, ref_metrics)
    one = data.first_sample()
    models = [m] if ref is None else [m, ref]
    lat = measure_interleaved(models, one, threads=threads, providers=providers)
    return EvaluateResult(metrics, lat[0], lat[1] if ref is not None else None, ref_metrics)
