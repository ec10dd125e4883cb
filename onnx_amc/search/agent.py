"""AMC's DDPG agent: Stable-Baselines3 DDPG configured, not forked.

Everything the official code does differently from a textbook DDPG is plugged into SB3's
extension points:

* **Networks**: ``policy_kwargs=dict(net_arch=[300, 300])`` for actor and critic.
* **Two learning rates** (actor 1e-4, critic 1e-3): SB3's DDPG has one ``learning_rate`` and
  re-writes it into every param group of both optimizers at each ``train()``
  (``_update_learning_rate``), so setting param groups once after setup would be undone.
  :class:`SplitLrPolicy` (a ``TD3Policy`` subclass passed as the policy class) builds each
  optimizer as :class:`PinnedLrAdam`, an Adam whose param groups carry their own ``pinned_lr``
  that ``step()`` restores before updating.  SB3's logged ``train/learning_rate`` therefore shows
  the unused schedule value, not the two real rates.
* **Exploration**: :class:`TruncatedNormalNoise`, an ``ActionNoise`` whose ``reset()`` (called by
  SB3 at each episode end) advances the episode counter, giving ``sigma x decay^(episode -
  warmup)``.
* **Credit and baseline**: :class:`EpisodeRewardBuffer` (``replay_buffer_class``) holds an
  episode's transitions until its last step, then stores them all with the episode's final
  reward; at sampling time it subtracts a moving average of batch mean rewards (alpha 0.5),
  exactly where the official ``update_policy`` does.
* **Warm-up**: ``learning_starts = warmup episodes x groups``: SB3 samples uniform random
  actions before that and trains only after it.
* **Updates**: ``train_freq=(1, "episode")``, ``gradient_steps=-1``: one gradient step per
  collected transition, run at each episode end (the official code updates once per
  transition while replaying the finished episode).
* **Tracking**: :class:`SearchCallback` (a ``BaseCallback``) keeps the best policy and JSON-able
  per-episode records, with an optional tqdm bar.
* **Rounds of K episodes** (``run_ddpg(..., batch=K)``, for parallel evaluation):
  :class:`PruningVecEnv`, a ``DummyVecEnv`` of K env copies sharing one evaluation cache, steps
  the K episodes in lockstep (every episode has ``num_groups`` steps) and, at their last step,
  evaluates the K candidates in ONE ``evaluate_many`` call (:func:`.env.finish_batch`).  SB3 with
  ``n_envs=K`` and ``train_freq=(num_groups, "step")`` (SB3 allows episodic frequencies with one
  env only; ``num_groups`` lockstep steps are exactly one round) then stores the K episodes and
  trains once per round with one gradient step per collected transition (``K x num_groups``).
  :class:`BatchNoise` draws the K envs' noise from the one seeded generator (SB3 would otherwise
  deep-copy the noise, giving every env the same draws) and decays sigma per finished episode,
  so sigma follows the episode count as in the sequential search.  Warm-up and episode counts
  are rounded up to whole rounds (:func:`rounds`).  K = 1 runs the unchanged single-env path.

Deviations from the official code (mit-han-lab/amc) that remain:

* Actor output: tanh to [-1, 1] mapped linearly to [lbound, rbound] (official: sigmoid to [0, 1]
  and the ratio clipped to the bounds); equivalent up to an affine map.
* Critic: SB3's ``ContinuousCritic`` concatenates state and action into one 300-300 MLP (official:
  separate 300-unit state and action branches, summed, then 300, then 1).  Final-layer
  initialisation is PyTorch's default (official: uniform +-3e-3).
* Noise: SB3 adds noise in the scaled [-1, 1] space without telling the noise the actor's
  output, so the official truncated normal *around the actor's output, bounded to [lbound,
  rbound]* becomes a normal truncated to +-2 (the width of the action range) followed by SB3's
  clip to [-1, 1]: near the bounds the excess mass lands on the bound instead of being
  resampled.  Sigma is converted: sigma_scaled = sigma x 2 / (rbound - lbound).
* Terminal transitions: SB3 does not bootstrap past ``done`` (official: keras-rl style memory).
* Default episodes: 300 with 100 warm-up (official: 800 with 100; paper: 400), for a CPU.
* Noise decay: the official 0.95 per episode, slowed when the search has more than 58
  episodes after warm-up so that sigma reaches 5% of its start only at the last episode
  (:func:`noise_decay`: 0.985 for the default 300 episodes, 0.990 for 400; 40-episode
  searches keep 0.95).  Why: with 0.95 the last ~240 of 400 episodes replay the actor's
  nearly noise-free policy from the evaluation cache, so DDPG scored 224-319 distinct
  candidates where random search, given "the same number of evaluations", scored 400; with
  the slower decay it scores 298-399.  Its effect on the returned candidate is within the
  noise of 3 seeds: ``benchmarks/bench_noise_decay.py`` (seeds 10-12, whose calibration
  splits are not the benchmark's) read held-out top-1 official -> slowed (random)
  0.790 -> 0.771 (0.751), 0.920 -> 0.935 (0.939), 0.346 -> 0.412 (0.384), 0.229 -> 0.190
  (0.212) on digits MobileNetV2 25% and 50% MACs with reconstruction, VGG and ResNet 50%
  without (mean +0.006, either schedule above random and uniform in 2 of 4); see
  ``benchmarks/RESULTS.md`` for ``bench_search`` at 400 episodes with it.
* Budget filling (``compress(fill=True)``, the default; the env's ``fill``): each finished
  episode's ratios are raised until the budget is spent before the candidate is scored
  (:func:`.budget.fill_budget`); the official wall only forbids going over.  Why: in 40-episode
  searches DDPG's results used 0.18-0.49 of the MACs under a 0.5 budget, and with filling its
  held-out scores rose in all 7 informative cells of ``benchmarks/bench_search.py`` on the
  packaged models (``benchmarks/RESULTS.md``).  The agent still learns from its own actions;
  the record keeps them as ``chosen``.
* Adam runs PyTorch's fused CPU kernel (``fused=True``): the same update, its arithmetic in
  another order, so runs are not bit-identical to the per-tensor Adam (still deterministic).
  Why: training is the driver's whole cost between rounds, so it sets how many workers a
  parallel search can use (see the driver table of ``benchmarks/bench_parallel.py``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DDPG
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.noise import ActionNoise, VectorizedActionNoise
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.td3.policies import TD3Policy

from .env import BatchEvaluator, PruningEnv, finish_batch
from .rewards import rank_key

__all__ = [
    "BatchNoise",
    "EpisodeRewardBuffer",
    "PinnedLrAdam",
    "PruningVecEnv",
    "SearchCallback",
    "SearchConfig",
    "SearchResult",
    "SplitLrPolicy",
    "TruncatedNormalNoise",
    "make_ddpg",
    "noise_decay",
    "rounds",
    "run_ddpg",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchConfig:
    """Settings of one DDPG search (official AMC values unless noted)."""

    episodes: int = 300  # official 800, paper 400: sized for a CPU
    warmup: int = 100  # episodes of uniform random actions before learning
    seed: int = 0
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01
    gamma: float = 1.0
    batch_size: int = 64
    buffer_per_group: int = 100  # replay buffer = this x number of groups
    net_arch: tuple[int, ...] = (300, 300)
    sigma: float = 0.5  # in keep-ratio units, as the official init_delta
    # Per episode after warm-up. None: the official 0.95, or slower when the search has more
    # episodes after warm-up than 0.95 can use (see :func:`noise_decay`).
    sigma_decay: float | None = None
    baseline_alpha: float = 0.5
    torch_threads: int = 1  # determinism and no contention with ONNX Runtime
    progress: bool = False

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.warmup < 0:
            raise ValueError(f"need episodes >= 1 and warmup >= 0, got {self.episodes}, "
                             f"{self.warmup}")
        if self.batch_size < 1 or self.buffer_per_group < 1 or self.torch_threads < 1:
            raise ValueError("batch_size, buffer_per_group and torch_threads must be >= 1")
        if not 0.0 < self.baseline_alpha <= 1.0:
            raise ValueError(f"baseline_alpha must be in (0, 1], got {self.baseline_alpha}")
        if self.sigma_decay is not None and not 0.0 < self.sigma_decay <= 1.0:
            raise ValueError(f"sigma_decay must be in (0, 1], got {self.sigma_decay}")


#: Fraction of the initial sigma left at the last episode when the decay follows the budget.
SIGMA_FLOOR = 0.05
OFFICIAL_DECAY = 0.95


def noise_decay(episodes: int, warmup: int) -> float:
    """The per-episode decay of the exploration sigma: the official 0.95, or slower so that
    sigma falls to ``SIGMA_FLOOR`` of its start only at the last episode.

    Why: 0.95 leaves 5% of sigma after 58 episodes, so the rest of a long search replays the
    actor's nearly noise-free policy from the evaluation cache and scores fewer distinct
    candidates than random search does with the same number of episodes (see the module
    doc for the measurement).  Short searches keep 0.95: never decay faster than the
    official code."""
    after = max(1, episodes - warmup)
    return max(OFFICIAL_DECAY, SIGMA_FLOOR ** (1.0 / after))


@dataclass(frozen=True)
class SearchResult:
    """Outcome of one search: the best episode and every episode's record (JSON-able)."""

    method: str
    best_policy: dict[str, float]
    best_ratios: tuple[float, ...]
    best_keep_counts: tuple[int, ...]
    best_reward: float
    best_score: float
    best: dict[str, Any]
    records: tuple[dict[str, Any], ...] = field(repr=False)
    evaluations: int = 0
    cache_hits: int = 0
    seconds: float = 0.0


# --------------------------------------------------------------------------- optimizers


class PinnedLrAdam(th.optim.Adam):
    """Adam whose param groups keep their own learning rate (``pinned_lr``) across SB3's
    ``_update_learning_rate``, which overwrites ``lr`` with the single schedule before every
    ``train()``."""

    def __init__(self, params, lr: float, **kwargs: Any) -> None:
        kwargs.setdefault("fused", True)  # see the module doc's deviations
        super().__init__([{"params": list(params), "pinned_lr": lr}], lr=lr, **kwargs)

    @th.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            group["lr"] = group["pinned_lr"]
        return super().step(closure)


class SplitLrPolicy(TD3Policy):
    """SB3's TD3/DDPG policy with separate actor and critic learning rates (see module doc)."""

    def __init__(self, *args: Any, actor_lr: float = 1e-4, critic_lr: float = 1e-3,
                 **kwargs: Any) -> None:
        self.actor_lr = actor_lr
        self.critic_lr = critic_lr
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        self.actor.optimizer = PinnedLrAdam(self.actor.parameters(), lr=self.actor_lr,
                                            **self.optimizer_kwargs)
        self.critic.optimizer = PinnedLrAdam(self.critic.parameters(), lr=self.critic_lr,
                                             **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(actor_lr=self.actor_lr, critic_lr=self.critic_lr)
        return data


# --------------------------------------------------------------------------- noise


class TruncatedNormalNoise(ActionNoise):
    """AMC's exploration: zero-mean normal, truncated to ``+-bound``, ``sigma`` decaying by
    ``decay`` per episode once ``warmup`` episodes have passed.

    ``reset()`` is called by SB3 at every episode end (warm-up ones included), so it counts
    episodes.  Draws come from a private generator seeded at construction (deterministic).
    """

    def __init__(self, sigma: float, decay: float, warmup: int, *, bound: float = 2.0,
                 seed: int | None = None, dim: int = 1) -> None:
        super().__init__()
        if sigma < 0 or not 0.0 < decay <= 1.0 or bound <= 0:
            raise ValueError("need sigma >= 0, 0 < decay <= 1, bound > 0")
        self.sigma0 = sigma
        self.decay = decay
        self.warmup = warmup
        self.bound = bound
        self.dim = dim
        self.episode = 0
        self._rng = np.random.default_rng(seed)

    @property
    def sigma(self) -> float:
        return self.sigma0 * self.decay ** max(0, self.episode - self.warmup)

    def reset(self, indices: Sequence[int] | None = None) -> None:
        self.episode += 1

    def __call__(self) -> np.ndarray:
        sigma = self.sigma
        out = np.zeros(self.dim, dtype=np.float32)
        if sigma == 0:
            return out
        for i in range(self.dim):
            for _ in range(1000):  # rejection sampling; acceptance >= 68 % while sigma <= bound
                x = self._rng.normal(0.0, sigma)
                if abs(x) <= self.bound:
                    break
            else:
                x = float(self._rng.uniform(-self.bound, self.bound))
            out[i] = x
        return out

    def __repr__(self) -> str:
        return f"TruncatedNormalNoise(sigma={self.sigma:.4g}, episode={self.episode})"


class BatchNoise(VectorizedActionNoise):
    """Exploration for K envs from ONE :class:`TruncatedNormalNoise`: each call draws K
    independent values (env order, from the base's seeded generator: deterministic for a seed),
    and every finished episode (``reset(indices=[i])``, called by SB3 once per done env) advances
    the base's episode count, so sigma decays per episode as in the sequential search.

    SB3 wraps a plain noise in ``VectorizedActionNoise`` with deep copies, which would give all K
    envs the same draws; subclassing it keeps SB3 from wrapping this one.
    """

    def __init__(self, base: TruncatedNormalNoise, n_envs: int) -> None:
        ActionNoise.__init__(self)
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        self.base_noise = base
        self.n_envs = int(n_envs)
        self._noises = [base] * self.n_envs  # SB3's attribute: one shared generator

    @property
    def sigma(self) -> float:
        return self.base_noise.sigma

    def reset(self, indices: Sequence[int] | None = None) -> None:
        # SB3 also calls reset() once (indices None) when learn() starts; counting it as one
        # episode, as the single-env noise does, keeps sigma on the K = 1 schedule.
        for _ in range(1 if indices is None else len(list(indices))):
            self.base_noise.reset()

    def __call__(self) -> np.ndarray:
        return np.stack([self.base_noise() for _ in range(self.n_envs)])

    def __repr__(self) -> str:
        return f"BatchNoise({self.base_noise!r}, n_envs={self.n_envs})"


# --------------------------------------------------------------------------- replay buffer


class EpisodeRewardBuffer(ReplayBuffer):
    """A replay buffer that credits every transition with its episode's final reward and
    subtracts a moving-average baseline at sampling time.

    Deviation from stock SB3: ``add`` stores nothing until the episode's last transition
    (``done``) arrives; then the whole episode is written with the reward of that last
    transition (the env returns 0 before it).  ``sample`` replaces ``rewards`` by ``rewards -
    b`` where ``b <- b + alpha (mean(batch rewards) - b)``, initialised to the first batch mean
    (the official ``update_policy``).

    With ``n_envs = K`` (rounds of K episodes) each buffer row holds one step of the K envs;
    the pending rows are written when the K episodes end, each env's transitions credited with
    that env's own final reward.  The K envs must end together (they do: every episode has
    ``num_groups`` steps and the envs start together); a partial end raises ``ValueError``.
    """

    def __init__(self, *args: Any, baseline_alpha: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.baseline_alpha = baseline_alpha
        self.baseline: float | None = None
        self._pending: list[tuple[Any, ...]] = []

    def add(self, obs, next_obs, action, reward, done, infos) -> None:  # type: ignore[override]
        dones = np.asarray(done).reshape(-1)
        self._pending.append((np.array(obs), np.array(next_obs), np.array(action),
                              np.array(done), [dict(i) for i in infos]))
        if not bool(dones.any()):
            return
        if not bool(dones.all()):
            raise ValueError("EpisodeRewardBuffer: the envs must end their episodes together "
                             f"(done = {dones.tolist()})")
        final = np.asarray(reward, dtype=np.float32).reshape(-1).copy()
        for o, no, a, d, inf in self._pending:
            super().add(o, no, a, final, d, inf)
        self._pending = []

    def sample(self, batch_size: int, env=None) -> ReplayBufferSamples:  # type: ignore[override]
        data = super().sample(batch_size, env)
        mean = float(data.rewards.mean())
        if self.baseline is None:
            self.baseline = mean
        else:
            self.baseline += self.baseline_alpha * (mean - self.baseline)
        return data._replace(rewards=data.rewards - self.baseline)


# --------------------------------------------------------------------------- callback


class SearchCallback(BaseCallback):
    """Best-so-far tracking and per-episode records (JSON-able dicts) from the env's final
    ``info["result"]``; optional tqdm bar with episode, reward, best and ETA."""

    def __init__(self, episodes: int, *, warmup: int = 0, progress: bool = False,
                 noise: TruncatedNormalNoise | None = None,
                 on_record: Callable[[dict[str, Any]], None] | None = None,
                 batch: int = 1) -> None:
        super().__init__()
        self.on_record = on_record
        self.episodes = episodes
        self.warmup = warmup
        self.batch = batch  # episodes per round: records get a "round" when > 1
        self.progress = progress
        self.noise = noise
        self.records: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self._t0 = time.perf_counter()
        self._bar = None

    def start(self) -> None:
        """Reset the clock and open the progress bar (SB3 calls it through
        ``_on_training_start``; baselines call it directly)."""
        self._t0 = time.perf_counter()
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self.episodes, unit="ep", desc="search")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _on_training_start(self) -> None:
        self.start()

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            result = info.get("result")
            if result is not None:
                self.record(result)
        return True

    def record(self, result: dict[str, Any]) -> dict[str, Any]:
        episode = len(self.records)
        rec = {
            "episode": episode,
            "phase": "warmup" if episode < self.warmup else "agent",
            **({"round": episode // self.batch} if self.batch > 1 else {}),
            **result,
            "elapsed_s": time.perf_counter() - self._t0,
        }
        if self.noise is not None and episode >= self.warmup:
            rec["sigma"] = self.noise.sigma
        self.records.append(rec)
        if self.on_record is not None:
            self.on_record(rec)
        if self.best is None or rank_key(rec) > rank_key(self.best):
            self.best = rec
            logger.info("episode %d: new best reward %.4f (score %.4f, %s use %.4f)",
                        episode, rec["reward"], rec["score"], rec["budget_kind"],
                        rec["budget_use"])
        if self._bar is not None:
            self._bar.set_postfix(reward=f"{rec['reward']:.4f}",
                                  best=f"{self.best['reward']:.4f}")
            self._bar.update(1)
        return rec

    def _on_training_end(self) -> None:
        self.close()

    def result(self, method: str, env: Any) -> SearchResult:
        """The search's outcome; ``env`` is anything with ``evaluations`` and ``cache_hits``
        counters (a :class:`PruningEnv`, a :class:`PruningVecEnv`)."""
        if self.best is None:
            raise RuntimeError("no episode finished")
        b = self.best
        return SearchResult(
            method=method,
            best_policy=dict(b["policy"]),
            best_ratios=tuple(b["ratios"]),
            best_keep_counts=tuple(b["keep_counts"]),
            best_reward=float(b["reward"]),
            best_score=float(b["score"]),
            best=dict(b),
            records=tuple(self.records),
            evaluations=env.evaluations,
            cache_hits=env.cache_hits,
            seconds=time.perf_counter() - self._t0,
        )


# --------------------------------------------------------------------------- batches


class PruningVecEnv(DummyVecEnv):
    """K copies of a :class:`PruningEnv` sharing its evaluation cache, stepped in lockstep; at the
    episodes' last step the K candidates are evaluated through ONE ``evaluate_many`` call
    (default: one after the other in this process, the reference for parallel runs).

    The first copy is ``env`` itself (so e.g. a cache pre-filled for ``--resume`` is used).
    """

    def __init__(self, env: PruningEnv, batch: int,
                 evaluate_many: BatchEvaluator | None = None) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        envs = [env] + [env.clone() for _ in range(batch - 1)]
        super().__init__([lambda e=e: e for e in envs])
        self.space = env.space
        self.budget = env.budget
        self.evaluate_many = evaluate_many

    @property
    def evaluations(self) -> int:
        return sum(e.evaluations for e in self.envs)  # type: ignore[attr-defined]

    @property
    def cache_hits(self) -> int:
        return sum(e.cache_hits for e in self.envs)  # type: ignore[attr-defined]

    def step_wait(self):
        envs: list[PruningEnv] = self.envs  # type: ignore[assignment]
        infos = [env.choose(a) for env, a in zip(envs, self.actions, strict=True)]
        over = [env.episode_over for env in envs]
        if all(over):
            results = finish_batch(envs, self.evaluate_many)
            steps = [env.conclude(i, r) for env, i, r in zip(envs, infos, results, strict=True)]
        elif any(over):
            raise RuntimeError("the envs of a batch must end their episodes together")
        else:
            steps = [(env.observation(), 0.0, False, False, i) for env, i in zip(envs, infos,
                                                                                  strict=True)]
        # DummyVecEnv.step_wait's bookkeeping (auto-reset, terminal observation).
        for idx, (obs, reward, terminated, truncated, info) in enumerate(steps):
            self.buf_rews[idx] = reward
            self.buf_dones[idx] = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            self.buf_infos[idx] = info
            if self.buf_dones[idx]:
                info["terminal_observation"] = obs
                obs, self.reset_infos[idx] = envs[idx].reset()
            self._save_obs(idx, obs)
        return (self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones),
                deepcopy(self.buf_infos))


def rounds(config: SearchConfig, batch: int) -> tuple[int, int]:
    """(episodes, warm-up) rounded up to whole rounds of ``batch`` episodes: the K envs of a
    round start together, so a round is either all warm-up (uniform random) or all agent, and
    the last round is full (its evaluations run in parallel anyway)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    def up(x: int) -> int:
        return -(-x // batch) * batch

    return up(config.episodes), up(config.warmup)


# --------------------------------------------------------------------------- search


def make_ddpg(env: PruningEnv | PruningVecEnv,
              config: SearchConfig) -> tuple[DDPG, TruncatedNormalNoise]:
    """SB3 DDPG with AMC's settings (see the module doc), and its exploration noise.  With a
    :class:`PruningVecEnv` of K envs, warm-up is rounded up to whole rounds (:func:`rounds`)
    and the noise is a :class:`BatchNoise` over the returned base noise."""
    n = env.space.num_groups
    assert isinstance(env.action_space, spaces.Box)
    batch = env.num_envs if isinstance(env, PruningVecEnv) else 1
    episodes, warmup = rounds(config, batch)
    width = float(env.space.rbound - env.space.lbound) or 1.0
    decay = (config.sigma_decay if config.sigma_decay is not None
             else noise_decay(episodes, warmup))
    noise = TruncatedNormalNoise(config.sigma * 2.0 / width, decay, warmup, seed=config.seed)
    model = DDPG(
        SplitLrPolicy,
        env,
        learning_rate=config.critic_lr,  # unused by the pinned optimizers; logged by SB3
        buffer_size=config.buffer_per_group * n,
        learning_starts=warmup * n,
        batch_size=config.batch_size,
        tau=config.tau,
        gamma=config.gamma,
        # SB3 refuses episodic train_freq with several envs; n lockstep steps are one round.
        train_freq=(1, "episode") if batch == 1 else (n, "step"),
        gradient_steps=-1,
        action_noise=noise if batch == 1 else BatchNoise(noise, batch),
        replay_buffer_class=EpisodeRewardBuffer,
        replay_buffer_kwargs={"baseline_alpha": config.baseline_alpha},
        policy_kwargs={"net_arch": list(config.net_arch), "actor_lr": config.actor_lr,
                       "critic_lr": config.critic_lr},
        seed=config.seed,
        device="cpu",
        verbose=0,
    )
    # Without a logger of its own, learn() configures SB3's default one, which creates an
    # empty SB3-<date> folder in the temp directory on every search; this one writes nowhere.
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model, noise


def run_ddpg(
    env: PruningEnv,
    config: SearchConfig = SearchConfig(),
    *,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    callback: SearchCallback | None = None,
    batch: int = 1,
    evaluate_many: BatchEvaluator | None = None,
) -> SearchResult:
    """Run AMC's DDPG search for ``config.episodes`` episodes; returns the best policy found.

    ``on_record`` receives each episode's record as it finishes (e.g. to append a JSON line).
    Pass your own ``callback`` to keep a handle on the best-so-far if the search is interrupted
    (``KeyboardInterrupt`` propagates; ``callback.result("ddpg", env)`` still works).

    ``batch=K`` runs rounds of K episodes whose candidates are evaluated together by
    ``evaluate_many(policies) -> [EvalResult]`` (e.g. ``RayPool.evaluate_many``; default: one
    after the other in this process, giving the same result); episodes and warm-up are rounded
    up to whole rounds.  ``batch=1`` without ``evaluate_many`` is the plain single-env search.

    Deterministic for a given seed (and K) on one machine: SB3 seeds Python, NumPy, torch and
    the action space; the noise has its own seeded generator; torch runs with
    ``config.torch_threads`` threads (restored afterwards).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    episodes, warmup = rounds(config, batch)
    old_threads = th.get_num_threads()
    th.set_num_threads(config.torch_threads)
    try:
        plain = batch == 1 and evaluate_many is None
        venv = env if plain else PruningVecEnv(env, batch, evaluate_many)
        model, noise = make_ddpg(venv, config)
        if callback is None:
            callback = SearchCallback(episodes, warmup=warmup, progress=config.progress,
                                      on_record=on_record, batch=batch)
        callback.noise = noise
        model.learn(total_timesteps=episodes * env.space.num_groups, callback=callback)
        return callback.result("ddpg", venv)
    finally:
        th.set_num_threads(old_threads)


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean and best reward of a record list (for logs and comparisons)."""
    rewards = [r["reward"] for r in records]
    return {"episodes": float(len(rewards)),
            "mean_reward": float(np.mean(rewards)) if rewards else math.nan,
            "best_reward": float(max(rewards)) if rewards else math.nan}
