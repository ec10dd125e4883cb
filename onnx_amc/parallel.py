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
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    from .scoring import ScoringSpec
    from .search.env import EvalResult

__all__ = ["RayPool", "WorkerFailure", "batch_size", "evaluation_pool"]

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
        target = spec.latency_target or "host"
        if latency and target != "host":
            self.where = f"{target} (through {self.where})"

    def describe(self) -> str:
        return self.where

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


# --------------------------------------------------------------------------- pool


@dataclass(frozen=True)
class TaskStat:
    """One candidate evaluation as the pool saw it (for benchmarks and logs)."""

    worker: int
    compute_s: float  # inside the actor: build the candidate, evaluate it
    wall_s: float  # from dispatch to result on the driver (compute + shipping + queueing)
    attempt: int


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

    Use as a context manager (or call :meth:`close`): it stops the actors, and Ray if it was
    started here.
    """

    def __init__(self, spec: ScoringSpec, workers: int | None = None,
                 address: str | None = None, *, factory: ScorerFactory | None = None) -> None:
        if workers is not None and workers < 1:
            raise InputError(f"--workers must be a positive integer, got {workers}")
        ray = _ray()
        self._ray = ray
        self._started = False
        self.actors: list[Any] = []
        self.stats: list[TaskStat] = []
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
        ray = self._ray
        lost = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
        policies = [dict(p) for p in policies]
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
                except lost as exc:
                    if attempts[i] >= 2:
                        raise WorkerFailure(
                            f"candidate {policies[i]} lost its Ray worker twice; last error: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
                    logger.warning("ray worker %d died evaluating a candidate (%s: %s); "
                                   "retrying it once", w, type(exc).__name__,
                                   str(exc).splitlines()[0] if str(exc) else "")
                    self._replace(w)
                    todo.appendleft(i)
                    idle.append(w)  # the other idle actors go first
                    continue
                self.stats.append(TaskStat(w, float(compute), time.perf_counter() - t0,
                                           attempts[i]))
                results[i] = ev
                idle.append(w)
        if self.measures_latency and policies:
            results = self._with_latency(policies, results)
        return results  # type: ignore[return-value]

    def _with_latency(self, policies: list[dict[str, float]],
                      results: list[EvalResult | None]) -> list[EvalResult | None]:
        """Latency of the round's candidates, all on actor 0, after the accuracy phase."""
        ray = self._ray
        lost = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
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

    __call__ = evaluate_many

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
