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
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DDPG
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.td3.policies import TD3Policy

from .env import PruningEnv

__all__ = [
    "EpisodeRewardBuffer",
    "PinnedLrAdam",
    "SearchCallback",
    "SearchConfig",
    "SearchResult",
    "SplitLrPolicy",
    "TruncatedNormalNoise",
    "make_ddpg",
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
    sigma_decay: float = 0.95  # per episode after warm-up
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

    def reset(self) -> None:
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


# --------------------------------------------------------------------------- replay buffer


class EpisodeRewardBuffer(ReplayBuffer):
    """A replay buffer that credits every transition with its episode's final reward and
    subtracts a moving-average baseline at sampling time.

    Deviation from stock SB3: ``add`` stores nothing until the episode's last transition
    (``done``) arrives; then the whole episode is written with the reward of that last
    transition (the env returns 0 before it).  ``sample`` replaces ``rewards`` by ``rewards -
    b`` where ``b <- b + alpha (mean(batch rewards) - b)``, initialised to the first batch mean
    (the official ``update_policy``).  Single env only.
    """

    def __init__(self, *args: Any, baseline_alpha: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.n_envs != 1:
            raise ValueError("EpisodeRewardBuffer supports a single environment")
        self.baseline_alpha = baseline_alpha
        self.baseline: float | None = None
        self._pending: list[tuple[Any, ...]] = []

    def add(self, obs, next_obs, action, reward, done, infos) -> None:  # type: ignore[override]
        self._pending.append((np.array(obs), np.array(next_obs), np.array(action),
                              np.array(done), [dict(i) for i in infos]))
        if not bool(np.asarray(done).reshape(-1)[0]):
            return
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
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__()
        self.on_record = on_record
        self.episodes = episodes
        self.warmup = warmup
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
            **result,
            "elapsed_s": time.perf_counter() - self._t0,
        }
        if self.noise is not None and episode >= self.warmup:
            rec["sigma"] = self.noise.sigma
        self.records.append(rec)
        if self.on_record is not None:
            self.on_record(rec)
        if self.best is None or rec["reward"] > self.best["reward"]:
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

    def result(self, method: str, env: PruningEnv) -> SearchResult:
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


# --------------------------------------------------------------------------- search


def make_ddpg(env: PruningEnv, config: SearchConfig) -> tuple[DDPG, TruncatedNormalNoise]:
    """SB3 DDPG with AMC's settings (see the module doc), and its exploration noise."""
    n = env.space.num_groups
    assert isinstance(env.action_space, spaces.Box)
    width = float(env.space.rbound - env.space.lbound) or 1.0
    noise = TruncatedNormalNoise(config.sigma * 2.0 / width, config.sigma_decay, config.warmup,
                                 seed=config.seed)
    model = DDPG(
        SplitLrPolicy,
        env,
        learning_rate=config.critic_lr,  # unused by the pinned optimizers; logged by SB3
        buffer_size=config.buffer_per_group * n,
        learning_starts=config.warmup * n,
        batch_size=config.batch_size,
        tau=config.tau,
        gamma=config.gamma,
        train_freq=(1, "episode"),
        gradient_steps=-1,
        action_noise=noise,
        replay_buffer_class=EpisodeRewardBuffer,
        replay_buffer_kwargs={"baseline_alpha": config.baseline_alpha},
        policy_kwargs={"net_arch": list(config.net_arch), "actor_lr": config.actor_lr,
                       "critic_lr": config.critic_lr},
        seed=config.seed,
        device="cpu",
        verbose=0,
    )
    return model, noise


def run_ddpg(
    env: PruningEnv,
    config: SearchConfig = SearchConfig(),
    *,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    callback: SearchCallback | None = None,
) -> SearchResult:
    """Run AMC's DDPG search for ``config.episodes`` episodes; returns the best policy found.

    ``on_record`` receives each episode's record as it finishes (e.g. to append a JSON line).
    Pass your own ``callback`` to keep a handle on the best-so-far if the search is interrupted
    (``KeyboardInterrupt`` propagates; ``callback.result("ddpg", env)`` still works).

    Deterministic for a given seed on one machine: SB3 seeds Python, NumPy, torch and the action
    space; the noise has its own seeded generator; torch runs with ``config.torch_threads``
    threads (restored afterwards).
    """
    old_threads = th.get_num_threads()
    th.set_num_threads(config.torch_threads)
    try:
        model, noise = make_ddpg(env, config)
        if callback is None:
            callback = SearchCallback(config.episodes, warmup=config.warmup,
                                      progress=config.progress, on_record=on_record)
        callback.noise = noise
        model.learn(total_timesteps=config.episodes * env.space.num_groups, callback=callback)
        return callback.result("ddpg", env)
    finally:
        th.set_num_threads(old_threads)


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean and best reward of a record list (for logs and comparisons)."""
    rewards = [r["reward"] for r in records]
    return {"episodes": float(len(rewards)),
            "mean_reward": float(np.mean(rewards)) if rewards else math.nan,
            "best_reward": float(max(rewards)) if rewards else math.nan}
