"""CI gates: compare the measured before/after numbers with the limits a CI job sets.

Pure functions over numbers, so the same check serves compress, prune and evaluate and is
tested without running anything.  A gate whose number was not measured fails loudly at input
time (the CLI checks that the data it needs is there), never silently passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Gate", "GateLimits", "check_gates", "MB"]

MB = 1_000_000  # --max-size is in megabytes (10^6 bytes), as file managers and CI logs show


@dataclass(frozen=True)
class GateLimits:
    """What the user asked for; ``None`` means no gate."""

    max_accuracy_drop: float | None = None  # absolute, on the held-out calibration part
    min_speedup: float | None = None  # measured latency before / after
    max_size_mb: float | None = None  # size of the written model file

    @property
    def any(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def validate(self) -> None:
        """Raise ValueError for limits that cannot mean anything."""
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ValueError(f"--max-accuracy-drop must be in [0, 1], got "
                             f"{self.max_accuracy_drop}")
        if self.min_speedup is not None and not self.min_speedup > 0:
            raise ValueError(f"--min-speedup must be > 0, got {self.min_speedup}")
        if self.max_size_mb is not None and not self.max_size_mb > 0:
            raise ValueError(f"--max-size must be > 0 MB, got {self.max_size_mb}")


@dataclass(frozen=True)
class Gate:
    name: str
    limit: float
    value: float
    passed: bool
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def check_gates(
    limits: GateLimits,
    *,
    score_before: float | None = None,
    score_after: float | None = None,
    score_name: str = "accuracy",
    latency_before_ms: float | None = None,
    latency_after_ms: float | None = None,
    size_bytes: int | None = None,
) -> list[Gate]:
    """One :class:`Gate` per limit set.

    Raises:
        ValueError: a limit is set but the number it needs is missing.
    """
    gates: list[Gate] = []
    if limits.max_accuracy_drop is not None:
        if score_before is None or score_after is None:
            raise ValueError("--max-accuracy-drop needs calibration data (--calib) to score "
                             "the model before and after")
        drop = float(score_before) - float(score_after)
        ok = drop <= limits.max_accuracy_drop
        gates.append(Gate(
            "max-accuracy-drop", limits.max_accuracy_drop, drop, ok,
            f"{score_name} drop {drop:.4f} ({score_before:.4f} -> {score_after:.4f}) "
            f"{'<=' if ok else '>'} {limits.max_accuracy_drop:.4f}"
            + ("" if ok else f": over by {drop - limits.max_accuracy_drop:.4f}")))
    if limits.min_speedup is not None:
        if latency_before_ms is None or latency_after_ms is None:
            raise ValueError("--min-speedup needs the latency before and after (a reference "
                             "model to compare with)")
        speedup = float(latency_before_ms) / float(latency_after_ms)
        ok = speedup >= limits.min_speedup
        gates.append(Gate(
            "min-speedup", limits.min_speedup, speedup, ok,
            f"measured speedup {speedup:.3f}x ({latency_before_ms:.3f} -> "
            f"{latency_after_ms:.3f} ms) {'>=' if ok else '<'} {limits.min_speedup:.3f}x"
            + ("" if ok else f": short by {limits.min_speedup - speedup:.3f}x")))
    if limits.max_size_mb is not None:
        if size_bytes is None:
            raise ValueError("--max-size needs the size of the written model")
        mb = size_bytes / MB
        ok = mb <= limits.max_size_mb
        gates.append(Gate(
            "max-size", limits.max_size_mb, mb, ok,
            f"model size {mb:.3f} MB {'<=' if ok else '>'} {limits.max_size_mb:.3f} MB"
            + ("" if ok else f": over by {mb - limits.max_size_mb:.3f} MB")))
    return gates
