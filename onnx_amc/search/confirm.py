"""Re-time the best candidates of a measured-latency search before choosing one.

A search under a measured latency budget keeps the candidate with the best reward, and the
reward prices each candidate's one timing.  Among hundreds of candidates near the budget, the
one chosen may be one whose timing came out low by chance: a winner's curse.  On this project's VM a host search's result timed 0.500 of the
original during the search and 0.550 when measured again at the end
(``benchmarks/results/bench_latency_search_43276aa.md``, MobileNetV2 seed 2).  Timing the few best
candidates once more and choosing on the fresh timings removes that bias from the choice: the
fresh timings are independent of the selection that picked them.  How much it matters depends
on the machine's noise: in ``benchmarks/bench_confirm.py`` (4 searches on the same model) the
second timing never changed the choice and no result ended over its budget, at the cost of
three more timings per search.

Pure over its inputs: the caller supplies the re-timing (host or device) and the reward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .rewards import RewardFn, RewardInput, rank_key

__all__ = ["confirm_latency"]


def confirm_latency(records: Sequence[Mapping[str, Any]],
                    retime: Callable[[Sequence[Mapping[str, float]]], Sequence[float]],
                    reward_fn: RewardFn, latency_target_ms: float, top: int = 3
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The best of the ``top`` best distinct candidates by reward on a fresh timing.

    ``retime`` times several policies in one call (one round trip to a remote device).
    Returns the chosen record (a copy with the fresh ``latency_ms`` and ``reward``; the
    search's values kept as ``latency_ms_search`` and ``reward_search``) and one entry per
    re-timed candidate for the report.  Candidates are ranked as the search ranks them
    (:func:`~onnx_amc.search.rewards.rank_key`: reward, closeness, then latency), on the fresh
    timings.
    """
    if not records:
        raise ValueError("no candidates to confirm")
    order = sorted(range(len(records)), key=lambda i: rank_key(records[i]), reverse=True)
    picked: list[int] = []
    seen: set[tuple[int, ...]] = set()
    for i in order:
        key = tuple(records[i].get("keep_counts") or sorted(records[i]["policy"].items()))
        if key in seen:
            continue
        seen.add(key)
        picked.append(i)
        if len(picked) >= max(1, top):
            break
    times = list(retime([records[i]["policy"] for i in picked]))
    if len(times) != len(picked):
        raise ValueError(f"retime returned {len(times)} timings for {len(picked)} policies")
    confirmed: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for i, ms in zip(picked, map(float, times), strict=True):
        r = records[i]
        reward = float(reward_fn(RewardInput(
            score=float(r["score"]), macs=int(r.get("macs") or 0),
            params=int(r.get("params") or 0), latency_ms=ms,
            latency_target_ms=latency_target_ms)))
        confirmed.append({"episode": int(r.get("episode", i)),
                          "latency_ms_search": r.get("latency_ms"), "latency_ms": ms,
                          "reward_search": float(r["reward"]), "reward": reward})
        fresh = {**r, "latency_ms": ms, "reward": reward,
                 "latency_ms_search": r.get("latency_ms"), "reward_search": r["reward"]}
        if best is None or rank_key(fresh) > rank_key(best):
            best = fresh
    assert best is not None
    return best, confirmed
