"""From results to the report dict: the numbers of one run, each labelled with where it came
from (counted, measured, predicted or estimated).  Kept apart from rendering so the CLI, the
Python API and the demo fill reports the same way."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..search.rewards import rank_key
from .build import file_info, new_report, source_info

__all__ = ["metrics_dict", "latency_dict", "side", "device_info", "compress_report",
           "prune_report", "evaluate_report", "finish"]


def metrics_dict(m: Any | None) -> dict[str, Any] | None:
    """A ``Metrics`` as the report's metrics block (accuracy with labels, else fidelity)."""
    if m is None:
        return None
    f = m.fidelity or {}
    return {
        "kind": "accuracy" if m.top1 is not None else "fidelity",
        "score": float(m.score),
        "score_name": m.score_name,
        "top1": m.top1, "top5": m.top5,
        "agreement": f.get("top1_agreement"),
        "cosine": f.get("mean_cosine"),
        "rel_l2": f.get("mean_rel_l2"),
        "samples": int(m.num_samples),
    }


def latency_dict(stats: Any | None, source: str = "measured",
                 detail: str | None = None) -> dict[str, Any] | None:
    """A ``LatencyStats`` (or a bare number of ms for predictions) as the report's block."""
    if stats is None:
        return None
    if isinstance(stats, int | float):
        return {"median_ms": float(stats), "iqr_ms": None, "runs": None, "threads": None,
                "source": source, "detail": detail or source}
    return {
        "median_ms": float(stats.median_ms), "iqr_ms": float(stats.iqr_ms),
        "runs": int(stats.runs), "threads": int(stats.threads), "source": source,
        "detail": detail or (f"ONNX Runtime on this host, batch 1, {stats.threads} thread(s), "
                             f"median of {stats.runs} runs"),
    }


def side(*, params: int, macs: int | None, size_bytes: int | None = None,
         latency: dict[str, Any] | None = None, metrics: Any | None = None) -> dict[str, Any]:
    return {"params": int(params), "macs": None if macs is None else int(macs),
            "size_bytes": size_bytes, "latency": latency, "metrics": metrics_dict(metrics)}


def device_info(*, target: str = "host", threads: int = 1,
                providers: Sequence[str] | None = None) -> dict[str, Any]:
    """This host as the measurement code describes it (``remote_bench.device_info``), plus the
    target and the session settings the latency numbers used."""
    import onnxruntime as ort

    from ..targets.remote_bench import device_info as host_info

    info = host_info(ort)
    return {"target": target, "cpu": info["cpu"], "machine": info["machine"],
            "cores": info["cores"], "threads": int(threads),
            "provider": (list(providers) if providers else ["CPUExecutionProvider"])[0],
            "onnxruntime": info["onnxruntime"]}


def _size(path: str | os.PathLike[str] | None) -> int | None:
    return os.path.getsize(path) if path is not None and os.path.exists(path) else None


def _input_info(model: Any) -> dict[str, Any]:
    """A ready info dict as is; else :func:`source_info` of the path or in-memory model."""
    return dict(model) if isinstance(model, dict) else source_info(model)


def _groups(groups: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for g in groups:
        kept = g.get("kept_indices")
        out.append({
            "index": int(g["index"]), "id": str(g["id"]), "channels": int(g["channels"]),
            "keep": g.get("keep"), "kept": len(kept) if kept is not None else None,
            "kernel": g.get("kernel"), "macs": g.get("macs"),
            "frozen_reason": g.get("frozen_reason"),
        })
    return out


def compress_report(res: Any, *, model: Any, output: str | os.PathLike[str] | None,
                    threads: int = 1) -> dict[str, Any]:
    """The report of a :class:`~onnx_amc.compress.CompressionResult` (before ``finish``)."""
    target = getattr(res, "target", "host")
    latency_source = getattr(res, "latency_source", "measured")
    rep = new_report("compress")
    in_info = _input_info(model if model is not None else res.source)
    rep["input"] = in_info
    rep["output"] = file_info(output) if output is not None and os.path.exists(output) else None
    rep["device"] = device_info(target=target, threads=threads)
    size_before = in_info.get("bytes")
    rep["before"] = side(params=res.params_before, macs=res.macs_before, size_bytes=size_before,
                         latency=latency_dict(res.latency_before, latency_source),
                         metrics=res.metrics_before)
    rep["after"] = side(params=res.params_after, macs=res.macs_after,
                        size_bytes=_size(output) or res_model_size(res.model),
                        latency=latency_dict(res.latency_after, latency_source),
                        metrics=res.metrics_after)
    rep["budget"] = {"kind": res.budget_kind, "keep": float(res.budget_keep),
                     "use": float(res.budget_use)}
    rep["search"] = {"method": res.search, "seed": int(res.seed),
                     "episodes": int(res.episodes_run), "warmup": int(res.warmup),
                     "reconstruct": bool(res.reconstruct), "round_to": int(res.round_to),
                     "interrupted": bool(res.interrupted), "seconds": float(res.seconds)}
    chosen = getattr(res, "chosen_episode", None)
    if chosen is not None:
        rep["search"]["chosen_episode"] = int(chosen)
    elif res.records:  # what compress keeps
        best = max(range(len(res.records)), key=lambda i: rank_key(res.records[i]))
        rep["search"]["chosen_episode"] = int(res.records[best].get("episode", best))
    if getattr(res, "confirmed", None):
        rep["search"]["confirmed"] = [dict(c) for c in res.confirmed]
    rep["groups"] = _groups(res.groups)
    rep["episodes"] = [{"episode": int(r.get("episode", i)), "phase": str(r.get("phase", "")),
                        "reward": r.get("reward"), "score": r.get("score"),
                        "budget_use": r.get("budget_use"), "latency_ms": r.get("latency_ms")}
                       for i, r in enumerate(res.records)]
    rep["measured"] = {"params": "counted", "macs": "counted",
                       "latency": latency_source if res.latency_before is not None else None,
                       "metrics": "measured"}
    return rep


def res_model_size(model: Any | None) -> int | None:
    return model.ByteSize() if model is not None else None


def prune_report(res: Any, *, model: Any, output: str | os.PathLike[str] | None,
                 threads: int = 1, latency_before: Any = None,
                 latency_after: Any = None) -> dict[str, Any]:
    """The report of a :class:`~onnx_amc.api.PruneResult`."""
    rep = new_report("prune")
    in_info = _input_info(model)
    rep["input"] = in_info
    rep["output"] = file_info(output) if output is not None and os.path.exists(output) else None
    rep["device"] = device_info(threads=threads)
    rep["before"] = side(params=res.params_before, macs=res.macs_before,
                         size_bytes=in_info.get("bytes"), latency=latency_dict(latency_before),
                         metrics=res.metrics_before)
    rep["after"] = side(params=res.params_after, macs=res.macs_after,
                        size_bytes=_size(output) or res_model_size(res.model),
                        latency=latency_dict(latency_after), metrics=res.metrics_after)
    rep["groups"] = _prune_groups(res)
    rep["measured"] = {"params": "counted", "macs": "counted",
                       "latency": "measured" if latency_before is not None else None,
                       "metrics": "measured" if res.metrics_before is not None else None}
    return rep


def _prune_groups(res: Any) -> list[dict[str, Any]]:
    a = getattr(res, "analysis", None)
    if a is None:
        return []
    from graph_ops import group_macs

    from ..compress import layer_kind

    gm = group_macs(a)
    out = []
    for g in a.groups:
        kept = res.plan.kept.get(g.id) if g.prunable else None
        n = g.size if (g.prunable and kept is None) else (len(kept) if kept is not None else None)
        out.append({"index": g.index, "id": g.id, "channels": g.size,
                    "keep": (n / g.size) if n is not None else None, "kept": n,
                    "kernel": layer_kind(a, g), "macs": gm.get(g.index),
                    "frozen_reason": g.frozen})
    return out


def evaluate_report(res: Any, *, model: Any, reference: Any | None,
                    threads: int = 1) -> dict[str, Any]:
    """The report of :func:`onnx_amc.api.evaluate`: with a reference, before = reference and
    after = the model; without, the model alone (``after`` is null)."""
    from graph_ops import analyze, count

    rep = new_report("evaluate")
    rep["device"] = device_info(threads=threads)
    m_counts = count(analyze(model))
    if reference is not None:
        r_counts = count(analyze(reference))
        rep["input"] = _input_info(reference)
        rep["output"] = _input_info(model)
        ref_metrics = getattr(res, "reference_metrics", None)
        rep["before"] = side(params=r_counts.params, macs=r_counts.macs,
                             size_bytes=_size(reference) if isinstance(reference, str | os.PathLike) else None,
                             latency=latency_dict(res.reference_latency), metrics=ref_metrics)
        rep["after"] = side(params=m_counts.params, macs=m_counts.macs,
                            size_bytes=_size(model) if isinstance(model, str | os.PathLike) else None,
                            latency=latency_dict(res.latency), metrics=res.metrics)
    else:
        rep["input"] = _input_info(model)
        rep["output"] = None
        rep["before"] = side(params=m_counts.params, macs=m_counts.macs,
                             size_bytes=_size(model) if isinstance(model, str | os.PathLike) else None,
                             latency=latency_dict(res.latency), metrics=res.metrics)
        rep["after"] = None
    rep["measured"] = {"params": "counted", "macs": "counted",
                       "latency": "measured" if res.latency is not None else None,
                       "metrics": "measured"}
    return rep


def finish(rep: dict[str, Any], gates: Sequence[Any]) -> dict[str, Any]:
    """Attach gate results and the overall status (NONE without gates)."""
    rep["gates"] = [g.as_dict() for g in gates]
    rep["status"] = "NONE" if not gates else ("PASS" if all(g.passed for g in gates)
                                              else "FAIL")
    return rep
