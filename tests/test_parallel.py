"""Rounds of K episodes and parallel candidate evaluation on Ray.

Fast unit tests of the batch parts (noise, replay buffer, batch finishing, rounding), then Ray
started locally with 2 CPUs on the default digits model: a Ray search equals the same search
evaluated in this process (same seed, same K), K = 1 on Ray equals the plain single-env search,
and a worker that dies mid-evaluation costs one retry, not the search.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graph_ops import analyze
from onnx_amc.errors import InputError
from onnx_amc.parallel import batch_size
from onnx_amc.search import build_space, macs_budget
from onnx_amc.search.agent import (
    BatchNoise,
    EpisodeRewardBuffer,
    SearchConfig,
    TruncatedNormalNoise,
    rounds,
    run_ddpg,
)
from onnx_amc.search.baselines import random_search
from onnx_amc.search.env import EvalResult, PruningEnv, finish_batch

ASSETS = Path(__file__).resolve().parents[1] / "onnx_amc" / "assets"
MODEL, CALIB = ASSETS / "digits_cnn.onnx", ASSETS / "digits_calib.npz"


def _trace(records):
    """What must match between two runs of one search (timings may differ)."""
    return [(r["policy"], r["reward"], r["cached"]) for r in records]


# --------------------------------------------------------------------------- no Ray


@pytest.fixture(scope="module")
def space():
    return build_space(analyze(str(MODEL), input_shapes={"input": (1, 1, 32, 32)}))


def fake_scorer(space):
    """Fake accuracy: weighted mean keep ratio (earlier groups weigh more); counts calls."""
    w = np.linspace(1.0, 0.1, space.num_groups)
    calls: list[int] = []

    def evaluate(policy):
        calls.append(1)
        return EvalResult(float(np.dot(w, space.ratios_of(policy)) / w.sum()))

    evaluate.calls = calls  # type: ignore[attr-defined]
    return evaluate


def test_batch_noise_draws_per_env_from_one_seeded_generator():
    base = TruncatedNormalNoise(1.0, 0.5, warmup=2, seed=7)
    noise = BatchNoise(base, 3)
    draws = noise()
    assert draws.shape == (3, 1)
    assert len(set(draws[:, 0].tolist())) == 3  # not the same draw copied to every env
    ref = TruncatedNormalNoise(1.0, 0.5, warmup=2, seed=7)
    assert np.array_equal(draws[:, 0], [ref()[0] for _ in range(3)])  # env order, one stream
    # SB3 calls reset(indices=[i]) once per finished env: sigma decays per episode.
    for i in range(3):
        noise.reset(indices=[i])
    assert base.episode == 3 and noise.sigma == pytest.approx(0.5)
    noise.reset()  # SB3's reset at learn() start counts as one, as for a single env
    assert base.episode == 4 and noise.sigma == pytest.approx(0.25)


def test_episode_buffer_credits_each_env_with_its_own_final_reward(space):
    env = PruningEnv(space, macs_budget(space, 0.5), fake_scorer(space))
    buf = EpisodeRewardBuffer(40, env.observation_space, env.action_space, device="cpu",
                              n_envs=2)
    obs = np.zeros((2, space.num_features), np.float32)
    act = np.zeros((2, 1), np.float32)
    for t in range(3):
        done = t == 2
        buf.add(obs, obs, act, np.array([-0.1, -0.7]) if done else np.zeros(2),
                np.array([done, done]), [{}, {}])
        assert buf.size() == (3 if done else 0)
    assert np.allclose(buf.rewards[:3, 0], -0.1) and np.allclose(buf.rewards[:3, 1], -0.7)
    with pytest.raises(ValueError, match="together"):
        buf.add(obs, obs, act, np.zeros(2), np.array([True, False]), [{}, {}])


def test_finish_batch_evaluates_each_distinct_candidate_once(space):
    fake = fake_scorer(space)
    env = PruningEnv(space, macs_budget(space, 0.5), fake)
    envs = [env, env.clone(), env.clone()]
    seen: list[int] = []

    def many(policies):
        seen.append(len(policies))
        return [fake(p) for p in policies]

    for e, a in zip(envs, (1.0, -1.0, 1.0), strict=True):  # env 0 and 2: the same candidate
        e.reset()
        for _ in range(space.num_groups):
            e.choose(a)
    results = finish_batch(envs, many)
    assert seen == [2] and len(fake.calls) == 2
    assert [r["cached"] for r in results] == [False, False, True]
    assert results[0]["reward"] == results[2]["reward"] != results[1]["reward"]
    assert env.evaluations + envs[1].evaluations == 2 and envs[2].cache_hits == 1
    assert finish_batch(envs, many)[0]["cached"] and seen == [2]  # all cached: no call
    with pytest.raises(ValueError, match="share"):
        finish_batch([env, PruningEnv(space, env.budget, fake)], many)


def test_rounds_and_batch_size():
    cfg = SearchConfig(episodes=25, warmup=7)
    assert rounds(cfg, 1) == (25, 7) and rounds(cfg, 4) == (28, 8) and rounds(cfg, 5) == (25, 10)
    assert batch_size(None, None, None) == 1 and batch_size(4, None, None) == 4
    assert batch_size(4, 2, None) == 2 and batch_size(None, 3, None) == 3
    for bad in ((0, None, None), (None, 0, None), (2.5, None, None)):
        with pytest.raises(InputError, match="positive integer"):
            batch_size(*bad)
    with pytest.raises(InputError, match="--ray-address needs --workers"):
        batch_size(None, None, "auto")


def test_random_search_in_rounds_does_not_depend_on_k(space):
    budget = macs_budget(space, 0.5)
    one = random_search(PruningEnv(space, budget, fake_scorer(space)), 7, seed=2)
    sizes: list[int] = []
    fake = fake_scorer(space)

    def many(policies):
        sizes.append(len(policies))
        return [fake(p) for p in policies]

    three = random_search(PruningEnv(space, budget, fake), 7, seed=2, batch=3,
                          evaluate_many=many)
    assert _trace(one.records) == _trace(three.records)
    assert [r["round"] for r in three.records] == [0, 0, 0, 1, 1, 1, 2]
    assert max(sizes) <= 3 and sum(sizes) == three.evaluations == one.evaluations


def test_batched_ddpg_is_deterministic_and_k1_vec_env_equals_plain(space):
    budget = macs_budget(space, 0.5)
    cfg = SearchConfig(episodes=10, warmup=4, seed=5)

    def run(**kw):
        fake = fake_scorer(space)
        return run_ddpg(PruningEnv(space, budget, fake), cfg, **kw)

    plain = run()
    vec1 = run(batch=1, evaluate_many=lambda ps: [fake_scorer(space)(p) for p in ps])
    assert _trace(vec1.records) == _trace(plain.records)
    a, b = run(batch=3), run(batch=3)
    assert len(a.records) == 12 and _trace(a.records) == _trace(b.records)
    assert [r["phase"] for r in a.records] == ["warmup"] * 6 + ["agent"] * 6  # warm-up 4 -> 6
    assert {r["sigma"] for r in a.records[6:9]} == {a.records[6]["sigma"]}  # one sigma a round
    assert a.records[9]["sigma"] < a.records[6]["sigma"]
    assert _trace(a.records) != _trace(plain.records)[:12]


def test_missing_ray_is_an_input_error(monkeypatch):
    from onnx_amc.parallel import RayPool

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(InputError, match=r"pip install 'onnx-amc\[ray\]'"):
        RayPool(None, 2)  # type: ignore[arg-type]


def test_nothing_imports_ray_without_workers():
    code = ("import sys, onnx_amc.compress, onnx_amc.parallel, onnx_amc.cli; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_compress_resume_with_rounds_replays_and_reaches_the_same_policy(tmp_path):
    from onnx_amc.compress import compress

    common = {"calib": str(CALIB), "flops": 0.5, "episodes": 6, "warmup": 2, "seed": 1,
              "batch": 2}
    full = compress(str(MODEL), log_path=tmp_path / "full.log.jsonl", **common)
    lines = (tmp_path / "full.log.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["settings"]["batch"] == 2
    assert [json.loads(x)["round"] for x in lines[1:]] == [0, 0, 1, 1, 2, 2]
    # An interrupted run: its log holds the settings and the first two rounds.
    part = tmp_path / "part.log.jsonl"
    part.write_text("\n".join(lines[:5]) + "\n")
    again = compress(str(MODEL), log_path=tmp_path / "again.log.jsonl", resume=part, **common)
    assert [r["cached"] for r in again.records[:4]] == [True] * 4
    assert _trace(again.records)[4:] == _trace(full.records)[4:]
    assert again.policy == full.policy
    with pytest.raises(InputError, match="other settings"):  # another K: another search
        compress(str(MODEL), resume=part, **{**common, "batch": 3})


# --------------------------------------------------------------------------- Ray


class CrashOnce:
    """Scorer factory (test only): the first scorer call that claims the marker file (removing
    it, which only one process can do) kills its worker process; every other call scores."""

    def __init__(self, marker: str, always: bool = False) -> None:
        self.marker = marker
        self.always = always

    def __call__(self, spec):
        from onnx_amc.scoring import CandidateScorer

        scorer = CandidateScorer(spec)
        marker, always = self.marker, self.always

        def score(policy):
            if always:
                os._exit(3)
            try:
                os.remove(marker)
            except FileNotFoundError:
                return scorer(policy)
            os._exit(3)

        return score


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def digits():
    """The default model as compress sets it up: analysis, space, budget, scoring spec."""
    from onnx_amc.api import load_calib
    from onnx_amc.data import split_calibration
    from onnx_amc.scoring import CandidateScorer, ScoringSpec

    a = analyze(str(MODEL))
    _, rest = split_calibration(load_calib(a.model, str(CALIB)), seed=0)
    search_part, _ = split_calibration(rest, seed=0)
    spec = ScoringSpec(model=a.model.SerializeToString(), search_data=search_part)
    space = build_space(a)
    budget = macs_budget(space, 0.5)

    def env():
        return PruningEnv(space, budget, CandidateScorer(spec, analysis=a, space=space))

    return spec, env


CFG = SearchConfig(episodes=6, warmup=2, seed=4)


def test_ray_search_equals_sequential_batched_search(ray_local, digits):
    from onnx_amc.parallel import RayPool

    spec, env = digits
    reference = run_ddpg(env(), CFG, batch=2)
    with RayPool(spec, 2) as pool:
        assert pool.workers == 2 and len(set(pool.where)) == 2
        result = run_ddpg(env(), CFG, batch=2, evaluate_many=pool.evaluate_many)
        used = {s.worker for s in pool.stats}
    assert _trace(result.records) == _trace(reference.records)
    assert result.best_policy == reference.best_policy
    assert [r["round"] for r in result.records] == [0, 0, 1, 1, 2, 2]
    assert len(pool.stats) == result.evaluations and used == {0, 1}
    assert ray_local.is_initialized()  # the pool did not stop a Ray it did not start


def test_k1_on_ray_equals_plain_search(ray_local, digits):
    from onnx_amc.parallel import RayPool

    spec, env = digits
    plain = run_ddpg(env(), CFG)
    with RayPool(spec, 2) as pool:
        on_ray = run_ddpg(env(), CFG, batch=1, evaluate_many=pool.evaluate_many)
    assert _trace(on_ray.records) == _trace(plain.records)


def test_worker_killed_mid_evaluation_is_retried_and_search_completes(ray_local, digits,
                                                                       tmp_path):
    from onnx_amc.parallel import RayPool

    spec, env = digits
    marker = tmp_path / "crash-once"
    marker.touch()
    cfg = SearchConfig(episodes=4, warmup=2, seed=4)
    reference = run_ddpg(env(), cfg, batch=2)
    with RayPool(spec, 2, factory=CrashOnce(str(marker))) as pool:
        result = run_ddpg(env(), cfg, batch=2, evaluate_many=pool.evaluate_many)
        attempts = [s.attempt for s in pool.stats]
    assert not marker.exists()  # a worker did die
    assert attempts.count(2) == 1 and len(attempts) == result.evaluations
    assert _trace(result.records) == _trace(reference.records)


def test_a_candidate_that_loses_its_worker_twice_is_a_clear_error(ray_local, digits, tmp_path):
    from onnx_amc.parallel import RayPool, WorkerFailure

    spec, env = digits
    e = env()
    e.reset()
    for _ in range(e.space.num_groups):
        e.choose(0.0)
    with RayPool(spec, 2, factory=CrashOnce(str(tmp_path / "unused"), always=True)) as pool, \
            pytest.raises(WorkerFailure, match="lost its Ray worker twice"):
        pool.evaluate_many([e.candidate()[1]])


def test_compress_with_workers_equals_compress_with_the_same_batch(ray_local):
    from onnx_amc.compress import compress

    common = {"calib": str(CALIB), "params": 0.6, "episodes": 4, "warmup": 2, "seed": 2}
    local = compress(str(MODEL), batch=2, **common)
    on_ray = compress(str(MODEL), workers=2, **common)
    assert _trace(on_ray.records) == _trace(local.records)
    assert on_ray.policy == local.policy and ray_local.is_initialized()
