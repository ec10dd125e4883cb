"""Parallel candidate evaluation on Ray: N worker processes here, or an existing Ray cluster.

Why Ray: candidate evaluations are independent and dominate a search on a real model, and Ray
already does what a home-made pool would have to re-invent (scheduling, an object store that
ships the model and the calibration data to each node once, restarting dead workers, clusters).
Nothing here imports ``ray`` until a :class:`RayPool` is built, so the base install stays light.

How a search uses it (``compress(..., workers=N)``): the agent proposes K episodes per round
(:func:`onnx_amc.search.agent.run_ddpg` with ``batch=K``), and the round's distinct, not yet
cached candidates go to :meth:`RayPool.evaluate_many` together.  The pool puts the
:class:`~onnx_amc.scoring.ScoringSpec` (model bytes, calibration arrays, settings) in the
object store once; each actor rebuilds a :class:`~onnx_amc.scoring.CandidateScorer` from it
once, and afterwards receives only policies (a few hundred bytes) and returns
:class:`~onnx_amc.search.env.EvalResult` values.  The scorer is deterministic, so the same seed
and the same K give the same search as evaluating the batch in this process.

Splitting candidates (work stealing): a round's candidates differ in cost (a candidate that
keeps more channels runs longer), and with K = N a round would wait for its slowest candidate
while the other workers idle.  So when the actors' scorers can (a
:class:`~onnx_amc.scoring.CandidateScorer`), each candidate's samples are cut into ``chunks``
contiguous ranges.  An idle actor continues a candidate it has already built, else starts one
nobody has, else steals a range from the candidate with the most ranges left when that
finishes it sooner (:func:`pick_candidate`: one more build against the ranges left).  Actors
return the outputs of their range; the driver concatenates them in sample order and computes
the metrics against the original's outputs (fetched once from actor 0).  ONNX Runtime's CPU
kernels compute each sample on its own (``tests/test_evaluate.py``), so a split candidate
scores exactly what it scores in one piece, and the search stays deterministic.  Each build is
repeated on every actor that runs a range of it (with reconstruction, the weights are fitted
again, identically: the fit is seeded), which is what the stealing rule weighs.

Failures: an actor that dies mid-evaluation (``RayActorError``, ``WorkerCrashedError``) is
replaced by a new one (built from the same spec ref; Ray's own ``max_restarts`` is not used
because calls to a restarting actor fail instead of waiting) and its candidate is retried once,
on the next idle actor; a second failure of the same candidate raises :class:`WorkerFailure`.  Errors raised by the scorer
itself are not retried (they would happen again) and propagate as in a sequential run.

Latency: latencies measured on different machines (or on a busy one) are not comparable, so
when the spec asks for latency only actor 0 measures it, after the round's accuracy
evaluations have finished (the other actors are idle then).  It times the *pruned* graph of
each candidate (``graph_ops.apply``): reconstruction changes weight values only, not shapes or
operators, so the timed graph is the candidate's.  Results say where latency was measured
(``extra["latency_on"]``).
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .scoring import ScoringSpec
    from .search.env import EvalResult

__all__ = ["RayPool", "WorkerFailure", "batch_size", "chunk_bounds", "evaluation_pool",
           "pick_candidate"]

logger = logging.getLogger(__name__)

#: Builds the scorer an actor uses, from the spec (default: ``CandidateScorer``).  Must be
#: picklable (a module-level function or class); the spec passed has ``latency=False``.
ScorerFactory = Callable[["ScoringSpec"], Callable[[Mapping[str, float]], "EvalResult"]]

RAY_MISSING = "--workers needs Ray: pip install 'onnx-amc[ray]'"


class WorkerFailure(RuntimeError):
    """A candidate's evaluation lost its worker twice (the search cannot go on without it)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    return ray


def batch_size(workers: int | None, batch: int | None, address: str | None) -> int:
    """K, the episodes per search round: ``batch`` if given, else ``workers``, else 1.

    With ``address`` (a Ray cluster) K must be explicit (``--workers`` or ``--batch``): results
    depend on K, so they must not depend on how many CPUs the cluster happens to have.

    Raises:
        InputError: ``workers`` or ``batch`` below 1, or ``address`` without either.
    """
    for name, value in (("--workers", workers), ("--batch", batch)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise InputError(f"{name} must be a positive integer, got {value}")
    if address is not None and workers is None and batch is None:
        raise InputError("--ray-address needs --workers N (or --batch K): the search's results "
                         "depend on the episodes per round, which must not depend on the cluster")
    return int(batch or workers or 1)


# --------------------------------------------------------------------------- actor


def _default_factory(spec: ScoringSpec):
    from .scoring import CandidateScorer

    return CandidateScorer(spec)


class _LatencyProbe:
    """Times the pruned graph of a policy with the scorer's own timer (same target, feeds,
    threads and providers as an in-process run; see the module doc)."""

    def __init__(self, scorer: Any) -> None:
        make_timer = getattr(scorer, "make_timer", None)
        if make_timer is None or not hasattr(scorer, "analysis"):
            raise TypeError("latency measurement on Ray needs a CandidateScorer")
        self.timer = make_timer()
        self.analysis = scorer.analysis
        self.space = scorer.space

    def __call__(self, policy: Mapping[str, float]) -> float:
        from graph_ops import apply

        return float(self.timer(apply(self.analysis,
                                      self.space.plan(self.space.ratios_of(policy)))))

    def original(self) -> float:
        return float(self.timer(self.analysis.model))


class _Worker:
    """One Ray actor: a scorer built once from the spec, then policies in, results out."""

    def __init__(self, spec_box: list[Any], factory: ScorerFactory | None, index: int,
                 latency: bool) -> None:
        import ray

        # The spec's ref comes boxed in a list so that Ray passes the ref, not the value: the
        # actor fetches it from the object store here (again after a restart, while the
        # driver keeps the ref alive).
        spec: ScoringSpec = ray.get(spec_box[0])
        self.index = index
        self.where = f"ray worker {index} ({socket.gethostname()}, pid {os.getpid()})"
        self.scorer = (factory or _default_factory)(replace(spec, latency=False))
        self.latency = _LatencyProbe(self.scorer) if latency else None
        self._sessions: dict[str, Any] = {}  # candidate token -> ORT session (LRU)
        target = spec.latency_target or "host"
        if latency and target != "host":
            self.where = f"{target} (through {self.where})"

    def describe(self) -> str:
        return self.where

    def can_split(self) -> bool:
        """Whether this actor can run sample ranges of a candidate (a CandidateScorer can;
        a bare scoring function from a custom factory cannot)."""
        return hasattr(self.scorer, "evaluator") and hasattr(self.scorer, "candidate")

    def reference(self) -> dict[str, Any]:
        """The original model's outputs on the search samples (the driver scores ranges)."""
        return self.scorer.evaluator.reference_outputs

    def run_range(self, token: str, policy: Mapping[str, float], start: int,
                  stop: int) -> tuple[dict[str, Any], float, float]:
        """Outputs of candidate ``token`` (built from ``policy`` on first use) on samples
        ``start:stop``, with the seconds spent building it here (0 if built before) and
        running the range."""
        t0 = time.perf_counter()
        session = self._sessions.pop(token, None)
        built = 0.0
        if session is None:
            session = self.scorer.evaluator.session(self.scorer.candidate(policy))
            built = time.perf_counter() - t0
        self._sessions[token] = session  # most recently used last
        while len(self._sessions) > _SESSIONS_KEPT:
            self._sessions.pop(next(iter(self._sessions)))
        t1 = time.perf_counter()
        out = self.scorer.evaluator.run(session, start, stop)
        return out, built, time.perf_counter() - t1

    def score(self, policy: Mapping[str, float]) -> tuple[EvalResult, float]:
        t0 = time.perf_counter()
        ev = self.scorer(policy)
        return ev, time.perf_counter() - t0

    def measure(self, policies: Sequence[Mapping[str, float]]) -> list[float]:
        if self.latency is None:
            raise RuntimeError(f"{self.where} does not measure latency")
        return [self.latency(p) for p in policies]

    def time_original(self) -> float:
        if self.latency is None:
            raise RuntimeError(f"{self.where} does not measure latency")
        return self.latency.original()


#: Candidate sessions an actor keeps: it mostly works on one candidate at a time (it finishes
#: the ranges of candidates it built before starting or stealing another).
_SESSIONS_KEPT = 3

# --------------------------------------------------------------------------- pool


@dataclass(frozen=True)
class TaskStat:
    """One task as the pool saw it: a whole candidate, or one sample range of it (for
    benchmarks and logs)."""

    worker: int
    compute_s: float  # inside the actor: build the candidate (if not built yet), evaluate
    wall_s: float  # from dispatch to result on the driver (compute + shipping + queueing)
    attempt: int
    call: int = 0  # which evaluate_many call
    candidate: int = 0  # index in that call's policies
    build_s: float = 0.0  # part of compute_s spent building the candidate on this actor


#: Sample ranges per candidate when splitting (see the module doc).
DEFAULT_CHUNKS = 4


def chunk_bounds(n: int, chunks: int, min_size: int = 8) -> list[tuple[int, int]]:
    """``chunks`` contiguous near-equal sample ranges covering ``0:n``; fewer when a range
    would hold under ``min_size`` samples (a range's fixed cost would dominate it)."""
    k = max(1, min(chunks, n // min_size))
    edges = [i * n // k for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def pick_candidate(built: Set[int], pending: Sequence[int], owned: Sequence[bool],
                   range_s: Sequence[float | None], build_s: float | None) -> int | None:
    """The candidate an idle actor runs a range of next, or None (it stays idle).

    1. one it has built already (no build cost), lowest index first;
    2. one no actor has built (the round's own work);
    3. a steal from the candidate with the most ranges left, ``p``, if that finishes it
       sooner.  The thief pays a build ``b`` and a range ``t``; the owner would run the ``p``
       ranges one after the other once its current range is done, so one steal helps when
       ``b + t < p x t`` (ignoring what is left of the owner's current range, which only
       makes the rule cautious).  Without measurements yet, steal when ``p >= 2``.

    ``pending[i]``: ranges of candidate i not yet dispatched; ``owned[i]``: some actor has
    built it; ``range_s[i]``: measured seconds per range of it (None: unknown); ``build_s``:
    measured seconds per build.
    """
    for i in sorted(built):
        if pending[i]:
            return i
    for i, p in enumerate(pending):
        if p and not owned[i]:
            return i
    left = [i for i, p in enumerate(pending) if p]
    if not left:
        return None
    i = max(left, key=lambda c: (pending[c], -c))
    p, t = pending[i], range_s[i]
    if t is None or build_s is None:
        return i if p >= 2 else None
    return i if build_s + t < p * t else None


class RayPool:
    """``evaluate_many(policies) -> [EvalResult]`` on N Ray actors (see the module doc).

    Args:
        spec: everything a candidate's score depends on; put in the object store once.
        workers: number of actors.  Locally (no ``address``) Ray is started in this process
            with ``workers x spec.threads`` CPUs (default: all CPUs of this machine); on a
            cluster the default is all its CPUs divided by ``spec.threads``.
        address: ``None`` to start Ray here, or ``"auto"`` / ``"ray://host:port"`` to connect
            to a running cluster (every node needs onnx-amc installed).
        factory: builds each actor's scorer from the spec (tests inject faults with it).
        chunks: sample ranges per candidate (default :data:`DEFAULT_CHUNKS`; 1 evaluates
            each candidate whole on one actor).  See the module doc.

    Use as a context manager (or call :meth:`close`): it stops the actors, and Ray if it was
    started here.
    """

    def __init__(self, spec: ScoringSpec, workers: int | None = None,
                 address: str | None = None, *, factory: ScorerFactory | None = None,
                 chunks: int = DEFAULT_CHUNKS) -> None:
        if workers is not None and workers < 1:
            raise InputError(f"--workers must be a positive integer, got {workers}")
        if chunks < 1:
            raise ValueError(f"chunks must be >= 1, got {chunks}")
        ray = _ray()
        self._ray = ray
        self._started = False
        self.actors: list[Any] = []
        self.stats: list[TaskStat] = []
        self.evaluated = 0  # candidates scored
        self._calls = 0
        self._labels = spec.search_data.labels
        self._range_times: deque[float] = deque(maxlen=64)  # recent seconds per range
        self._build_times: deque[float] = deque(maxlen=64)  # recent seconds per build
        threads = max(1, int(spec.threads))
        t0 = time.perf_counter()
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home
            kwargs: dict[str, Any] = {"include_dashboard": False,
                                      "logging_level": logging.ERROR}
            if address is None:
                cpus = (workers or os.cpu_count() or 1) * threads
                ray.init(num_cpus=cpus, **kwargs)
            else:
                try:
                    ray.init(address=address, **kwargs)
                except (ConnectionError, ValueError, RuntimeError) as exc:
                    raise InputError(f"--ray-address {address}: cannot connect to Ray: "
                                     f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from None
            self._started = True
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        self.workers = int(workers)
        self.measures_latency = bool(spec.latency)
        # The spec crosses to the object store once; actors (and restarted actors) get the ref.
        self._spec_ref = ray.put(spec)
        self.init_s = time.perf_counter() - t0
        self._actor_cls = ray.remote(num_cpus=threads, max_restarts=0)(_Worker)
        self._factory = factory
        self.actors = [self._new_actor(i) for i in range(self.workers)]
        self.replaced = 0
        try:
            self.where = ray.get([a.describe.remote() for a in self.actors])
            self.bounds = chunk_bounds(len(spec.search_data), chunks)
            if len(self.bounds) > 1 and not all(ray.get([a.can_split.remote()
                                                         for a in self.actors])):
                self.bounds = [(0, len(spec.search_data))]
            self._reference = (ray.get(self.actors[0].reference.remote())
                               if len(self.bounds) > 1 else None)
        except Exception as exc:
            self.close()
            raise RuntimeError(f"Ray workers could not build the candidate scorer (is onnx-amc "
                               f"installed on every node?): {exc}") from exc
        self.startup_s = time.perf_counter() - t0
        logger.info("ray pool: %d workers ready in %.1f s", self.workers, self.startup_s)

    def _new_actor(self, index: int) -> Any:
        return self._actor_cls.remote([self._spec_ref], self._factory, index,
                                      index == 0 and self.measures_latency)

    def _replace(self, index: int) -> None:
        """A fresh actor in slot ``index`` (its calls wait until it is built)."""
        try:
            self._ray.kill(self.actors[index], no_restart=True)
        except Exception:  # already gone
            logger.debug("ray actor already gone", exc_info=True)
        self.actors[index] = self._new_actor(index)
        self.replaced += 1

    # ------------------------------------------------------------------ evaluation

    def evaluate_many(self, policies: Sequence[Mapping[str, float]]) -> list[EvalResult]:
        """Evaluate the policies on idle actors, results in the order of ``policies``."""
        policies = [dict(p) for p in policies]
        self._calls += 1
        if len(self.bounds) > 1:
            results = self._evaluate_split(policies)
        else:
            results = self._evaluate_whole(policies)
        self.evaluated += len(policies)
        if self.measures_latency and policies:
            results = self._with_latency(policies, results)
        return results  # type: ignore[return-value]

    __call__ = evaluate_many

    def _lost(self) -> tuple[type[BaseException], ...]:
        return (self._ray.exceptions.RayActorError, self._ray.exceptions.WorkerCrashedError)

    def _retry_or_fail(self, what: str, attempts: int, w: int, exc: BaseException) -> None:
        """After an actor died running ``what``: replace it (the caller re-queues the task),
        or raise :class:`WorkerFailure` if that task already lost its worker once."""
        first = str(exc).splitlines()[0] if str(exc) else ""
        if attempts >= 2:
            raise WorkerFailure(f"{what} lost its Ray worker twice; last error: "
                                f"{type(exc).__name__}: {first}") from exc
        logger.warning("ray worker %d died evaluating a candidate (%s: %s); retrying it once",
                       w, type(exc).__name__, first)
        self._replace(w)

    def _evaluate_split(self, policies: list[dict[str, float]]) -> list[EvalResult | None]:
        """Each candidate's sample ranges on idle actors, by :func:`pick_candidate`."""
        from .metrics import Metrics
        from .scoring import eval_result

        ray = self._ray
        k, n_ranges = len(policies), len(self.bounds)
        tokens = [f"{self._calls}:{i}" for i in range(k)]
        pending = [deque(range(n_ranges)) for _ in range(k)]
        parts: list[list[Any]] = [[None] * n_ranges for _ in range(k)]
        left = [n_ranges] * k
        built: list[set[int]] = [set() for _ in self.actors]
        times: list[list[float]] = [[] for _ in range(k)]
        attempts: dict[tuple[int, int], int] = {}
        results: list[EvalResult | None] = [None] * k
        idle = deque(range(len(self.actors)))
        running: dict[Any, tuple[int, int, int, float]] = {}
        while any(left):
            for w in list(idle):
                owned = [any(i in b for b in built) for i in range(k)]
                fallback = statistics.median(self._range_times) if self._range_times else None
                i = pick_candidate(
                    built[w], [len(p) for p in pending], owned,
                    [statistics.median(t) if t else fallback for t in times],
                    statistics.median(self._build_times) if self._build_times else None)
                if i is None and not running:  # never leave work stranded
                    i = next((c for c in range(k) if pending[c]), None)
                if i is None:
                    continue
                j = pending[i].popleft()
                idle.remove(w)
                built[w].add(i)
                attempts[(i, j)] = attempts.get((i, j), 0) + 1
                lo, hi = self.bounds[j]
                ref = self.actors[w].run_range.remote(tokens[i], policies[i], lo, hi)
                running[ref] = (i, j, w, time.perf_counter())
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                i, j, w, t0 = running.pop(ref)
                try:
                    out, build_s, run_s = ray.get(ref)
                except self._lost() as exc:
                    self._retry_or_fail(f"candidate {policies[i]} (samples "
                                        f"{self.bounds[j][0]}:{self.bounds[j][1]})",
                                        attempts[(i, j)], w, exc)
                    built[w] = set()
                    pending[i].appendleft(j)
                    idle.append(w)
                    continue
                self.stats.append(TaskStat(w, float(build_s + run_s),
                                           time.perf_counter() - t0, attempts[(i, j)],
                                           self._calls, i, float(build_s)))
                if build_s:
                    self._build_times.append(float(build_s))
                times[i].append(float(run_s))
                self._range_times.append(float(run_s))
                parts[i][j] = out
                left[i] -= 1
                if not left[i]:
                    outputs = {name: np.concatenate([p[name] for p in parts[i]], axis=0)
                               for name in parts[i][0]}
                    parts[i] = []
                    results[i] = eval_result(Metrics.compute(outputs, self._reference,
                                                             self._labels))
                idle.append(w)
        return results

    def _evaluate_whole(self, policies: list[dict[str, float]]) -> list[EvalResult | None]:
        """Each candidate whole on one idle actor."""
        ray = self._ray
        results: list[EvalResult | None] = [None] * len(policies)
        attempts = [0] * len(policies)
        todo = deque(range(len(policies)))
        idle = deque(range(len(self.actors)))
        running: dict[Any, tuple[int, int, float]] = {}
        while todo or running:
            while todo and idle:
                i, w = todo.popleft(), idle.popleft()
                attempts[i] += 1
                running[self.actors[w].score.remote(policies[i])] = (i, w, time.perf_counter())
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                i, w, t0 = running.pop(ref)
                try:
                    ev, compute = ray.get(ref)
                except self._lost() as exc:
                    self._retry_or_fail(f"candidate {policies[i]}", attempts[i], w, exc)
                    todo.appendleft(i)
                    idle.append(w)  # the other idle actors go first
                    continue
                self.stats.append(TaskStat(w, float(compute), time.perf_counter() - t0,
                                           attempts[i], self._calls, i))
                results[i] = ev
                idle.append(w)
        return results

    def _with_latency(self, policies: list[dict[str, float]],
                      results: list[EvalResult | None]) -> list[EvalResult | None]:
        """Latency of the round's candidates, all on actor 0, after the accuracy phase."""
        ray = self._ray
        lost = self._lost()
        try:
            ms = ray.get(self.actors[0].measure.remote(policies))
        except lost:
            logger.warning("the latency worker died; retrying the round's latency once")
            self._replace(0)
            try:
                ms = ray.get(self.actors[0].measure.remote(policies))
            except lost as exc:
                raise WorkerFailure(f"the latency worker died twice: {exc}") from exc
        where = self.where[0]
        return [replace(r, latency_ms=float(m), extra={**r.extra, "latency_on": where})
                for r, m in zip(results, ms, strict=True) if r is not None]

    # ------------------------------------------------------------------ lifetime

    def time_original(self) -> float:
        """Latency of the unpruned model (ms) on the latency worker, so that the latency
        target and the candidates are measured in the same place."""
        if not self.measures_latency:
            raise RuntimeError("this pool does not measure latency (spec.latency is False)")
        return float(self._ray.get(self.actors[0].time_original.remote()))

    def describe(self) -> str:
        lat = f"; latency measured on {self.where[0]}" if self.measures_latency else ""
        return f"{self.workers} Ray workers{lat}"

    def close(self) -> None:
        """Stop the actors, and Ray itself if this pool started it."""
        ray = self._ray
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                logger.debug("ray actor already gone", exc_info=True)
        self.actors = []
        if self._started and ray.is_initialized():
            ray.shutdown()
            self._started = False

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def evaluation_pool(spec: ScoringSpec, workers: int | None = None,
                    address: str | None = None) -> Iterator[RayPool | None]:
    """A :class:`RayPool` for the search, closed afterwards; ``None`` (evaluate in this
    process) when neither ``workers`` nor ``address`` is given, and then Ray is not imported."""
    if workers is None and address is None:
        yield None
        return
    with RayPool(spec, workers, address) as pool:
        logger.info("evaluating candidates on %s", pool.describe())
        yield pool
