"""What ``--target`` names: this host, a remote device, a profile file, or a device by name.

* ``host`` (default): live measurement here (``source="measured"``).
* ``ssh://user@host[:port]``: live measurement on a remote device (transport elsewhere).
* ``PATH.json``: a profile built with ``onnx-amc profile`` (``source="predicted"``).
* ``NAME``: a bundled profile ``onnx_amc/targets/profiles/NAME.json``.  Bundled profiles are real
  measurements only (their ``device`` block says where).  A name without one (``arm64``, ...)
  falls back to the FLOPs/memory estimate, ``source="estimated"`` with a loud warning: the
  numbers are then not latency of any device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnx_amc.errors import InputError

from .predict import load_profile, stale_warning

__all__ = ["PROFILES_DIR", "TargetSpec", "bundled_names", "resolve_target"]

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class TargetSpec:
    """A resolved ``--target``.

    ``kind`` in {"host", "ssh", "profile", "named", "estimate"}; ``source`` says what latency
    numbers under this target are: "measured" (host, ssh), "predicted" (a measured profile) or
    "estimated" (FLOPs/memory, no measurement at all).  ``warning`` is for the CLI to print and
    the report to carry (None when there is nothing to say).
    """

    kind: str
    name: str
    profile: dict[str, Any] | None
    source: str
    warning: str | None = None
    url: str | None = None
    path: str | None = None


def bundled_names() -> list[str]:
    """Names with a bundled measured profile."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.json"))


def estimated_warning(name: str) -> str:
    return (f"target '{name}': no measured latency profile exists for it, so latency is "
            "ESTIMATED, NOT MEASURED (FLOPs/memory proxy, relative units); measure one on the "
            f"device with `onnx-amc profile --model MODEL --out {name}.json` and pass "
            f"--target {name}.json")


def resolve_target(spec: str | None) -> TargetSpec:
    """Resolve a ``--target`` value.

    Raises:
        InputError: empty or malformed value, a missing/malformed profile file, or an ssh URL
            without a host.
    """
    spec = "host" if spec is None else spec.strip()
    if not spec:
        raise InputError("--target is empty: use host, ssh://user@host, PROFILE.json or a name")
    if spec == "host":
        return TargetSpec("host", "host", None, "measured")
    if spec.startswith("ssh://"):
        rest = spec[len("ssh://"):]
        host = rest.rsplit("@", 1)[-1].split(":", 1)[0].strip("/")
        if not host:
            raise InputError(f"--target {spec}: expected ssh://[user@]host[:port]")
        return TargetSpec("ssh", spec, None, "measured", url=spec)
    looks_like_path = spec.endswith(".json") or "/" in spec or spec.startswith(".")
    if looks_like_path or Path(spec).exists():
        path = Path(spec)
        if path.is_dir():
            raise InputError(f"--target {spec}: is a folder, not a profile file")
        if not path.is_file():
            raise InputError(f"--target {spec}: no such profile file")
        prof = load_profile(path)
        return TargetSpec("profile", path.stem, prof, "predicted", stale_warning(prof),
                          path=str(path))
    if not _NAME.match(spec):
        raise InputError(f"--target '{spec}' is not host, ssh://..., a .json profile or a name")
    bundled = PROFILES_DIR / f"{spec}.json"
    if bundled.is_file():
        prof = load_profile(bundled)
        notes = [stale_warning(prof)]
        if prof["kind"] == "generic":
            notes.append(f"target '{spec}': a generic per-op-kind profile measured on "
                         f"{prof['device'].get('cpu', '?')} ({prof['device'].get('machine', '?')}"
                         "): predicted, coarser than a profile of this model")
        warning = "; ".join(n for n in notes if n) or None
        return TargetSpec("named", spec, prof, "predicted", warning, path=str(bundled))
    return TargetSpec("estimate", spec, None, "estimated", estimated_warning(spec))
