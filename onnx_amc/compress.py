"""``compress``: the AMC search end to end, from a model and calibration data to a smaller model.

One pass, left to right: analyse the graph once, split the calibration data (a reconstruction
half, and a search part and a test part of the other half), build the layer space and the budget, let the search
(DDPG, or the uniform/random baselines) propose policies that the env scores through an
evaluator, then re-apply the best policy (with reconstruction if asked) and measure it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from graph_ops import DEFAULT_ROUND_TO, analyze, count, group_macs, save_model
from graph_ops.load import write_atomic

from .errors import InputError
from .metrics import SEARCH_SCORES
from .search.rewards import rank_key
from .values import is_finite_number

logger = logging.getLogger(__name__)

__all__ = ["CompressionResult", "compress", "SEARCHES", "default_episodes"]

SEARCHES = ("ddpg", "uniform", "random", "greedy")


def default_episodes(num_groups: int) -> tuple[int, int]:
    """(episodes, warm-up) sized for a CPU: the paper's 400 episodes with 100 of warm-up on a GPU;
    here 300 and 100, fewer for small spaces where the rounded policies are few anyway."""
    if num_groups <= 8:
        return 150, 50
    return 300, 100


@dataclass
class CompressionResult:
    """The best candidate and everything measured about it. ``save(out)`` writes OUT,
    OUT.policy.json and OUT.log.jsonl."""

    model: onnx.ModelProto
    policy: dict[str, float]
    kept_indices: dict[str, list[int]]
    budget_kind: str
    budget_keep: float
    budget_use: float
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    metrics_before: Any  # on the test part, which the search never saw
    metrics_after: Any
    search_score: float  # the best candidate's score on the search part, of score_kind
    search: str
    seed: int
    episodes_run: int
    interrupted: bool
    records: list[dict[str, Any]] = field(default_factory=list)
    reconstruction: Any | None = None
    groups: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    latency_before: Any | None = None  # LatencyStats of the original, measured with the result
    latency_after: Any | None = None
    warmup: int = 0
    round_to: int = DEFAULT_ROUND_TO
    reconstruct: bool = False
    source: dict[str, Any] = field(default_factory=dict)  # path, sha256 and bytes of the input
    latency_source: str = "measured"  # of latency_before/after: measured, predicted, estimated
    target: str = "host"
    warnings: list[str] = field(default_factory=list)
    chosen_episode: int | None = None  # the record the result comes from
    latency_target_ms: float | None = None  # a measured latency budget in the search's unit
    confirmed: list[dict[str, Any]] = field(default_factory=list)  # see search.confirm
    score_kind: str = "auto"  # what the search maximised (metrics.SEARCH_SCORES)

    def policy_document(self) -> dict[str, Any]:
        """JSON re-appliable with ``onnx-amc prune --policy`` (kept indices win over ratios)."""
        return {
            "format": "onnx-amc policy v1",
            "budget": {"kind": self.budget_kind, "keep": self.budget_keep,
                       "use": self.budget_use},
            "search": self.search, "seed": self.seed,
            "groups": self.groups,
        }

    def save(self, out: str | os.PathLike[str], *, report: bool = True) -> Path:
        """Write the model, ``<model>.policy.json`` beside it, and return the model's path.

        ``out`` is a file path (``x.onnx``), or a folder (existing, ending in a separator, or
        without a suffix): then the folder gets ``model.onnx``, its policy, the episode log
        ``model.onnx.log.jsonl`` and, with ``report``, ``report.json/.md/.html``."""
        raw = os.fspath(out)
        p = Path(raw)
        as_dir = p.is_dir() or raw.endswith(("/", os.sep)) or not p.suffix
        if as_dir:
            p.mkdir(parents=True, exist_ok=True)
            model_path = p / "model.onnx"
        else:
            model_path = p
        save_model(self.model, model_path)
        write_atomic(model_path.with_name(model_path.name + ".policy.json"),
                     json.dumps(self.policy_document(), indent=2).encode())
        if as_dir:
            log = "".join(json.dumps(_jsonable(r)) + "\n" for r in self.records)
            write_atomic(model_path.with_name(model_path.name + ".log.jsonl"), log.encode())
            if report:
                from .report import write_report
                from .report.collect import compress_report, finish

                write_report(finish(compress_report(self, model=self.source or None,
                                                    output=model_path), []), p)
        return model_path


def _check_budget(flops: float | None, params: float | None,
                  latency: float | None = None) -> tuple[str, float]:
    given = [(k, v) for k, v in (("macs", flops), ("params", params), ("latency", latency))
             if v is not None]
    if len(given) != 1:
        raise InputError("give exactly one budget: --flops R, --params R or --latency R "
                         "(fraction to keep)")
    kind, value = given[0]
    if isinstance(value, bool) or not (0.0 < float(value) < 1.0) or math.isnan(float(value)):
        raise InputError(f"budget must be a fraction in (0, 1), got {value}")
    return kind, float(value)


def compress(
    model: str | os.PathLike[str] | bytes | onnx.ModelProto,
    *,
    calib: str | os.PathLike[str] | Any,
    flops: float | None = None,
    params: float | None = None,
    latency: float | None = None,
    target: str = "host",
    providers: tuple[str, ...] | None = None,
    profile_time_s: float = 120.0,
    episodes: int | None = None,
    warmup: int | None = None,
    search: str = "ddpg",
    reconstruct: bool = False,
    seed: int = 0,
    threads: int = 1,
    calib_size: int | None = None,
    image_options: Any | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    round_to: int | None = None,
    progress: bool = False,
    log_path: str | os.PathLike[str] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    resume: str | os.PathLike[str] | None = None,
    measure_latency: bool = True,
    workers: int | None = None,
    ray_address: str | None = None,
    batch: int | None = None,
    ddpg: Mapping[str, Any] | None = None,
    confirm: int = 3,
    score: str = "auto",
    fill: bool = True,
    lbound: float = 0.2,
) -> CompressionResult:
    """Search per-group keep ratios under a MACs (``flops``) or ``params`` budget (the fraction
    to keep) and return the best candidate. Ctrl-C (KeyboardInterrupt) stops the search and
    returns the best candidate found so far (``interrupted=True``).

    ``workers=N`` evaluates candidates in N Ray worker processes started here, ``ray_address``
    (``"auto"`` or ``"ray://host:port"``) on an existing Ray cluster (see
    :mod:`onnx_amc.parallel`); without them Ray is not imported.  The search then runs in
    rounds of ``batch`` episodes (K, default ``workers``; 1 without workers) evaluated together;
    episodes and warm-up are rounded up to whole rounds.  Same seed and same K: same result, with
    or without workers.  ``batch`` alone (no workers) runs the rounds in this process.

    ``ddpg`` overrides fields of :class:`~onnx_amc.search.agent.SearchConfig` (e.g.
    ``{"sigma_decay": 0.95}`` for the official constant decay), for experiments.

    Under a latency budget measured on host or over SSH, the ``confirm`` best distinct
    candidates are timed once more and the result is chosen on those timings
    (:mod:`onnx_amc.search.confirm`); 0 keeps the search's choice.

    ``score`` is what the search maximises (:data:`onnx_amc.metrics.SEARCH_SCORES`); the
    result is reported in :attr:`~onnx_amc.metrics.Metrics.score` whatever it is.

    ``fill`` (default) raises every finished episode's keep ratios until the budget is spent
    before the candidate is evaluated (:func:`onnx_amc.search.budget.fill_budget`); the wall
    alone, as in the official code (``fill=False``), only forbids going over.

    ``lbound`` is the lowest keep ratio the search may give a group (AMC's action range
    [lbound, 1]; the official default 0.2): lower it for budgets that every group at 0.2
    cannot reach."""
    from .api import load_calib
    from .data import CalibrationSet, split_calibration
    from .evaluate import Evaluator
    from .report.build import source_info
    from .scoring import CandidateScorer, ScoringSpec
    from .search import build_space, make_budget
    from .search.env import PruningEnv

    t_start = time.perf_counter()
    kind, keep = _check_budget(flops, params, latency)
    if search not in SEARCHES:
        raise InputError(f"--search must be one of {', '.join(SEARCHES)}, got {search}")
    if score not in SEARCH_SCORES:
        raise InputError(f"--score must be one of {', '.join(SEARCH_SCORES)}, got {score}")
    if episodes is not None and episodes < 1:
        raise InputError(f"--episodes must be >= 1, got {episodes}")
    if round_to is None:  # the target's measured fast multiple, else the host default
        round_to = _target_round_to(target) or DEFAULT_ROUND_TO
    if round_to < 1:
        raise InputError(f"--round-to must be a positive integer, got {round_to}")
    if not (isinstance(lbound, int | float) and 0.0 < lbound <= 1.0):
        raise InputError(f"--lbound must be in (0, 1], got {lbound}")
    if providers:
        from .latency import resolve_providers

        providers = resolve_providers(providers)  # InputError now, not after the search
    if target.startswith("ssh://"):
        from .targets.ssh import SshTarget

        SshTarget.parse(target).check()  # unreachable device: one line before any work
    a = analyze(model, input_shapes=input_shapes)
    if not a.prunable_groups:
        raise InputError("the model has no prunable channel group (see onnx-amc inspect)")
    if count(a).macs is None:  # the layer embedding and every budget need them
        names = ", ".join(a.view.graph_inputs)
        raise InputError(f"MACs are unknown: the model has dynamic input dimensions; pass "
                         f"--input-shape NAME=D1,D2,... (inputs: {names})")
    data = calib if isinstance(calib, CalibrationSet) else load_calib(
        a.model, calib, calib_size=calib_size, image_options=image_options, seed=seed)
    if len(data) < 8:
        raise InputError("calibration data needs at least 8 samples (fit, search and test)")
    # Three disjoint parts: reconstruction fits on one, the search's reward scores another, and
    # the result is reported on a third that the search never saw (no selection bias).
    fit, rest = split_calibration(data, seed=seed)
    search_part, test_part = split_calibration(rest, seed=seed)
    tester = Evaluator(a.model, test_part, threads=threads)
    space = build_space(a, round_to=round_to, lbound=float(lbound))
    lsrc = None
    reward, latency_target_ms = "acc", None
    if kind == "latency":
        from .latency_budget import latency_source
        from .search.budget import callable_budget

        lsrc = latency_source(target, a, space, threads=threads, providers=providers,
                              profile_time_s=profile_time_s, input_shapes=input_shapes,
                              progress=progress, seed=seed)
        budget = callable_budget("latency", keep, lsrc.wall_cost)
    else:
        try:
            budget = make_budget(space, kind, keep)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    if budget.original is None or budget.original <= 0:  # unknown MACs were refused above
        raise InputError(f"the original model's {kind} cost is {budget.original}: a budget "
                         "fraction of it means nothing")
    spec = ScoringSpec(model=a.model.SerializeToString(), search_data=search_part,
                       fit_inputs=fit.inputs, input_shapes=input_shapes, round_to=round_to,
                       lbound=space.lbound, reconstruct=reconstruct, threads=threads, seed=seed,
                       latency=lsrc is not None and lsrc.measure is not None,
                       providers=tuple(providers) if providers else None,
                       latency_target=lsrc.measure if lsrc is not None else None,
                       score=score)
    evaluate_policy = CandidateScorer(spec, analysis=a, space=space)
    if lsrc is None and target != "host" and not target.startswith("ssh://"):
        # A FLOPs/params search reported on a profile or a name: its latency is predicted
        # (or estimated). Host and ssh results are measured directly by _final_latency.
        from .latency_budget import latency_source

        lsrc = latency_source(target, a, space, threads=threads, providers=providers)
    if lsrc is not None and lsrc.warning:  # said now, before the search, and kept in warnings
        logger.warning("%s", lsrc.warning)
    if kind == "latency" and lsrc.measure is not None:
        # Measured candidates are priced against the measured original: the wall's
        # prediction can be off, so overshoot costs reward instead of being forbidden.
        reward = "acc_latency"
        latency_target_ms = keep * evaluate_policy.time_original()

    try:
        env = PruningEnv(space, budget, evaluate_policy, reward=reward,
                         latency_target_ms=latency_target_ms, fill=fill)
    except ValueError as exc:  # infeasible budget: below what lbound allows
        raise InputError(str(exc)) from None
    settings = {"budget_kind": kind, "budget_keep": keep, "search": search, "seed": seed,
                "reconstruct": reconstruct, "round_to": round_to,
                "groups": [g.id for g in a.prunable_groups]}
    from .parallel import batch_size

    k = batch_size(workers, batch, ray_address)  # episodes per round
    if k > 1 and search == "ddpg":  # DDPG's results depend on K (random's do not)
        settings["batch"] = k
    if ddpg and search == "ddpg":
        settings["ddpg"] = dict(ddpg)
    if score != "auto":  # a cached score of another kind must not be resumed
        settings["score"] = score
    settings["fill"] = fill  # the same actions give other candidates
    if space.lbound != 0.2:  # other action bounds, other candidates (absent: the default)
        settings["lbound"] = space.lbound
    if resume is not None:
        env.cache.update(_load_resume(resume, settings))

    n_ep, n_warm = default_episodes(space.num_groups)
    episodes = episodes or n_ep
    if warmup is not None and search == "ddpg" and warmup >= episodes:
        logger.warning("warmup %d >= %d episodes: the agent acts on its own in the last episode "
                       "only (the others draw random actions)", warmup, episodes)
    warmup = min(warmup if warmup is not None else n_warm, max(episodes - 1, 0))
    if search == "ddpg":
        from .search.agent import SearchConfig

        try:
            cfg = SearchConfig(episodes=episodes, warmup=warmup, seed=seed, progress=progress,
                               **dict(ddpg or {}))
        except (TypeError, ValueError) as exc:
            raise InputError(f"ddpg settings: {exc}") from None
    records: list[dict[str, Any]] = []
    log_fh = open(log_path, "w") if log_path else None  # noqa: SIM115 (closed below)

    if log_fh is not None:  # the first line says what the evaluations belong to (for --resume)
        log_fh.write(json.dumps({"settings": settings}) + "\n")

    stop, restore_sigint = _latch_sigint()

    def check_stop() -> None:
        if stop.is_set():  # a Ctrl-C whose KeyboardInterrupt something swallowed
            raise KeyboardInterrupt

    def record(rec: dict[str, Any]) -> None:
        records.append(rec)
        if log_fh is not None:
            log_fh.write(json.dumps(_jsonable(rec)) + "\n")
            log_fh.flush()
        if on_record is not None:
            on_record(rec)
        check_stop()

    interrupted = False
    try:
        if search in ("ddpg", "random"):
            from .parallel import evaluation_pool

            with evaluation_pool(spec, workers, ray_address) as pool:
                many = pool.evaluate_many if pool is not None else None
                if pool is not None and pool.measures_latency and latency_target_ms is not None:
                    # Candidates are timed on the pool's latency worker: time the original there.
                    env.latency_target_ms = keep * pool.time_original()
                if search == "ddpg":
                    from .search.agent import run_ddpg

                    run_ddpg(env, cfg, on_record=record, batch=k, evaluate_many=many)
                else:
                    from .search.baselines import random_search

                    random_search(env, episodes, seed=seed, progress=progress, on_record=record,
                                  batch=k, evaluate_many=many)
        elif search == "greedy":
            from .parallel import evaluation_pool
            from .search.baselines import greedy_search
            from .search.env import sequential

            def probe(p: dict[str, Any]) -> None:  # logged, but never a candidate
                if log_fh is not None:
                    log_fh.write(json.dumps({"phase": "sensitivity", **p}) + "\n")

            with evaluation_pool(spec, workers, ray_address) as pool:
                many = pool.evaluate_many if pool is not None else sequential(env.evaluate)

                def probes(policies: Any) -> Any:  # its probes are not recorded: check here
                    out = many(policies)
                    check_stop()
                    return out

                res = greedy_search(env, progress=progress, on_probe=probe, batch=k,
                                    evaluate_many=probes)
            record({**res.best, "episode": 0, "phase": "greedy"})
        else:
            from .search.baselines import uniform_search

            res = uniform_search(env)
            record({**res.best, "episode": 0, "phase": "uniform"})
    except KeyboardInterrupt:
        interrupted = True
        if not records:
            raise
        logger.warning("interrupted after %d episodes: finishing the best candidate so far "
                       "(Ctrl-C again to abort without writing it)", len(records))
    finally:
        restore_sigint()
        if log_fh is not None:
            log_fh.close()
            if not records:  # nothing to resume from: leave no settings-only log behind
                Path(log_fh.name).unlink(missing_ok=True)

    # Finishing the best candidate (rebuild, reconstruction, final scores and timings) takes
    # seconds to minutes: a first Ctrl-C here only sets late_stop, so the candidate is still
    # returned (marked interrupted); a second one aborts.
    late_stop, restore_sigint = _latch_sigint(first_only_sets=True)
    try:
        best = max(records, key=rank_key)
        confirmed: list[dict[str, Any]] = []
        if (kind == "latency" and lsrc.measure is not None and search in ("ddpg", "random")
                and confirm > 0 and not interrupted):
            from .search.confirm import confirm_latency

            # The re-timing runs here: price it against the original timed here (with workers
            # the search's unit came from the pool's latency worker).
            best, confirmed = confirm_latency(records, evaluate_policy.time_policies,
                                              env.reward_fn,
                                              keep * evaluate_policy.time_original(),
                                              top=confirm)
            logger.info("chosen on a second timing: episode %s, %.4f ms (%.4f in the search)",
                        best.get("episode"), best["latency_ms"], best["latency_ms_search"])
        final, plan, report = evaluate_policy.build(best["policy"])
        before, after = count(a), count(a, plan.keep)
        lat_before = lat_after = None
        lat_source = lsrc.source if lsrc is not None else "measured"
        if measure_latency:
            lat_before, lat_after, lat_source = _final_latency(
                target, lsrc, a, final, best["policy"], test_part, threads, providers)
        groups = []
        gmacs = group_macs(a)
        for g in a.groups:
            entry: dict[str, Any] = {"index": g.index, "id": g.id, "channels": g.size,
                                     "kernel": layer_kind(a, g), "macs": gmacs.get(g.index)}
            if g.prunable:
                kept = plan.kept.get(g.id, np.arange(g.size))
                entry.update(keep=len(kept) / g.size, kept_indices=[int(i) for i in kept])
            else:
                entry["frozen_reason"] = g.frozen
            groups.append(entry)
        return CompressionResult(
            model=final, policy=dict(best["policy"]),
            kept_indices={g["id"]: g["kept_indices"] for g in groups if "kept_indices" in g},
            budget_kind=kind, budget_keep=keep, budget_use=float(best["budget_use"]),
            params_before=before.params, params_after=after.params, macs_before=before.macs,
            macs_after=after.macs, metrics_before=tester.reference_metrics,
            metrics_after=tester.evaluate(final), search_score=float(best["score"]),
            search=search, seed=seed, score_kind=score,
            episodes_run=len(records), interrupted=interrupted or late_stop.is_set(),
            records=records,
            reconstruction=report, groups=groups, seconds=time.perf_counter() - t_start,
            latency_before=lat_before, latency_after=lat_after, warmup=warmup, round_to=round_to,
            reconstruct=reconstruct, source=source_info(model),
            latency_source=lat_source, target=target,
            warnings=[lsrc.warning] if lsrc is not None and lsrc.warning else [],
            chosen_episode=best.get("episode"), confirmed=confirmed,
            latency_target_ms=env.latency_target_ms,
        )
    finally:
        restore_sigint()


def _target_round_to(target: str) -> int | None:
    """The channel multiple a target's profile measured as fastest (``round_to_hint``)."""
    if target == "host" or target.startswith("ssh://"):
        return None
    from .targets.named import resolve_target

    spec = resolve_target(target)
    hint = (spec.profile or {}).get("round_to_hint") or {}
    value = hint.get("round_to") if isinstance(hint, dict) else None
    return int(value) if isinstance(value, int) and value >= 1 else None


def _latch_sigint(first_only_sets: bool = False) -> tuple[threading.Event, Callable[[], None]]:
    """An event that Ctrl-C sets (besides raising KeyboardInterrupt as usual), and a function
    that restores the previous handler.  With ``first_only_sets`` the first Ctrl-C only sets
    the event and a second one raises: for work whose result is the point of stopping (the
    best candidate so far, still to be written).

    Why: Python raises KeyboardInterrupt wherever the main thread is; when that is a finaliser
    (an ONNX Runtime session's ``__del__``, thousands per search), it prints "Exception
    ignored" and carries on, and a long search never stopped (seen twice in CI: no exit 120 s
    after SIGINT).  With the event, the search raises again after the episode it is in.
    Outside the main thread no handler can be installed; the event then never fires."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if first_only_sets and not stop.is_set():
            stop.set()
            logger.warning("interrupted: finishing the best candidate so far (Ctrl-C again "
                           "to abort without writing it)")
            return
        stop.set()
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        return stop, lambda: None
    return stop, lambda: signal.signal(signal.SIGINT,
                                       old if old is not None else signal.default_int_handler)


def _final_latency(target: str, lsrc: Any, a: Any, final: onnx.ModelProto,
                   policy: Mapping[str, float], data: Any, threads: int,
                   providers: Any) -> tuple[Any, Any, str]:
    """Latency of the original and the result where the target says: measured interleaved on
    this host, measured on the device over SSH, or predicted from the target's profile."""
    provs = list(providers) if providers else None
    one = data.first_sample()
    if target == "host":
        from .latency import measure_interleaved

        b, af = measure_interleaved([a.model, final], one, threads=threads, providers=provs)
        return b, af, "measured"
    if target.startswith("ssh://"):
        from .targets.ssh import SshTarget

        b, af = SshTarget.parse(target).measure_many(
            [a.model.SerializeToString(), final.SerializeToString()], threads=threads,
            providers=provs, input_shapes={k: v.shape for k, v in one.items()})
        return b, af, "measured"
    if lsrc is not None and lsrc.predict_ms is not None:
        return float(lsrc.predict_ms({})), float(lsrc.predict_ms(policy)), "predicted"
    return None, None, "estimated"


def layer_kind(analysis: Any, group: Any) -> str | None:
    """What produces a group's channels, as the AMC paper's figures label layers: ``3x3``,
    ``1x1``, ``dw3x3`` (depthwise), ``g3x3`` (grouped), ``fc``; else the producer's op type."""
    from graph_ops.analyze import _node_label

    by_name = {_node_label(n, i): n for i, n in enumerate(analysis.view.nodes)}
    for name in group.producers:
        node = by_name.get(name)
        if node is None:
            continue
        if node.op_type in ("Gemm", "MatMul"):
            return "fc"
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            w = analysis.view.const(node.input[1])
            if w is None or w.ndim < 3:
                return node.op_type
            k = "x".join(str(d) for d in w.shape[2:])
            grp = next((a.i for a in node.attribute if a.name == "group"), 1)
            if grp > 1:
                return ("dw" if w.shape[1] == 1 else "g") + k
            return k
        return node.op_type
    return None


def _load_resume(path: str | os.PathLike[str], settings: dict[str, Any]
                 ) -> dict[tuple[int, ...], dict[str, Any]]:
    """Evaluations of an interrupted search, from its JSON-lines log (a file, or a folder with
    exactly one ``*.log.jsonl``). The search is deterministic for a seed, so re-running it with
    these evaluations cached replays the finished episodes in moments and continues from there.
    Only JSON is read; the settings must match the new run's."""
    p = Path(path)
    if p.is_dir():
        logs = sorted(p.glob("*.log.jsonl"))
        if len(logs) != 1:
            raise InputError(f"--resume {p}: expected exactly one *.log.jsonl, found {len(logs)}")
        p = logs[0]
    try:
        lines = p.read_text().splitlines()
        first = json.loads(lines[0]) if lines else {}
        rows = [json.loads(line) for line in lines[1:] if line.strip()]
    except FileNotFoundError:
        raise InputError(f"--resume {p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"--resume {p}: not an onnx-amc search log") from None
    logged = first.get("settings") if isinstance(first, dict) else None
    if not isinstance(logged, dict):
        raise InputError(f"--resume {p}: not an onnx-amc search log (its first line holds no "
                         "settings)")
    if "fill" not in logged:
        logged = {**logged, "fill": False}  # logs written before budget filling existed
    if logged != settings:
        raise InputError(f"--resume {p}: the log belongs to a search with other settings "
                         "(model groups, budget, search, seed, reconstruct, round-to, score, "
                         "lbound or budget filling)")
    keys = ("policy", "keep_counts", "score", "reward", "macs", "params", "budget_kind",
            "budget_use", "latency_ms", "extra")
    cache: dict[tuple[int, ...], dict[str, Any]] = {}
    for row in rows:
        if isinstance(row, dict) and row.get("phase") == "sensitivity":
            continue  # greedy's single-group probes: never candidates (greedy re-probes)
        if not _is_episode_record(row):
            raise InputError(f"--resume {p}: malformed episode record")
        cache[tuple(row["keep_counts"])] = {k: row.get(k) for k in keys}
    logger.info("resume: %d cached evaluations from %s", len(cache), p)
    return cache


def _is_episode_record(row: Any) -> bool:
    """What a resumed search reads from a logged episode, of the types it computes with: a
    hand-edited log must be refused here, not fail inside the search."""
    return (isinstance(row, dict) and isinstance(row.get("policy"), dict)
            and isinstance(row.get("keep_counts"), list)
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                    for c in row["keep_counts"])
            and is_finite_number(row.get("score")) and is_finite_number(row.get("reward")))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
