"""``--target host``: live measurement on this machine, and a description of the machine.

Reports show which device a latency was measured on.  :func:`device_info` returns the same keys
as a remote device's header from :mod:`onnx_amc.targets.remote_bench` (both call its
``device_info``), so host and ``ssh://`` results can be printed and compared the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from onnx_amc.latency import (
    LatencyStats,
    make_session,
    measure,
    random_inputs,
    resolve_providers,
)
from onnx_amc.targets import remote_bench

__all__ = ["HostTarget", "available_providers", "device_info"]


def available_providers() -> list[str]:
    """Execution providers of this onnxruntime build, in ORT's priority order."""
    return list(ort.get_available_providers())


def device_info(providers: Sequence[str] | str | None = None) -> dict[str, Any]:
    """CPU model, cores, platform, Python/numpy/onnxruntime versions, available providers.

    ``used_providers`` is what a session with ``providers`` (``--ep``) would run on.

    Raises:
        InputError: ``providers`` names a provider this build lacks.
    """
    info = remote_bench.device_info(ort)
    info["used_providers"] = list(resolve_providers(providers))
    return info


@dataclass(frozen=True)
class HostTarget:
    """This machine, with the same two calls as :class:`onnx_amc.targets.ssh.SshTarget`."""

    def check(self, providers: Sequence[str] | str | None = None) -> dict[str, Any]:
        """Device info (never fails for CPU; InputError for an unavailable provider)."""
        return device_info(providers)

    def measure_many(
        self,
        models: Sequence[bytes],
        *,
        threads: int = 1,
        providers: Sequence[str] | str | None = None,
        rel_ci: float = remote_bench.REL_CI,
        time_cap_s: float = remote_bench.TIME_CAP_S,
        warmup: int = remote_bench.WARMUP,
        min_runs: int = remote_bench.MIN_RUNS,
        min_time_s: float = remote_bench.MIN_TIME_S,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> list[LatencyStats]:
        """Each model measured on its own by :func:`onnx_amc.latency.measure`, in order;
        ``input_shapes`` as for :meth:`SshTarget.measure_many`."""
        names = resolve_providers(providers)

        def session_and_feeds(m: bytes) -> tuple[Any, Any]:
            if not input_shapes:
                return m, None
            session = make_session(m, threads, names)
            return session, random_inputs(session, pinned=input_shapes)

        return [
            measure(
                *session_and_feeds(m),
                threads=threads,
                providers=names,
                rel_ci=rel_ci,
                time_cap_s=time_cap_s,
                warmup=warmup,
                min_runs=min_runs,
                min_time_s=min_time_s,
            )
            for m in models
        ]
