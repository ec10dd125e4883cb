"""Report dicts: creation, file fingerprints, JSON cleaning and schema validation.

The lead code fills a plain dict (see ``schema.json``); this module only supplies the parts
that do not depend on the run (versions, timestamps, hashes) and checks the result, so a
report that reaches disk is always one that the published schema accepts.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import importlib.metadata as _md
import json
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "COMMANDS",
    "REPORT_FORMAT",
    "file_info",
    "source_info",
    "load_schema",
    "new_report",
    "to_jsonable",
    "validate",
]

REPORT_FORMAT = "onnx-amc report v1"
COMMANDS = ("compress", "prune", "evaluate")

# Distribution names looked up with importlib.metadata, so optional ones are never imported.
_REQUIRED_DISTS = ("onnx", "onnxruntime", "numpy")
_OPTIONAL_DISTS = ("gymnasium", "stable-baselines3", "torch")
_SCHEMA_PATH = Path(__file__).with_name("schema.json")


def _dist_version(name: str) -> str | None:
    try:
        return _md.version(name)
    except _md.PackageNotFoundError:
        return None


def _versions() -> dict[str, str | None]:
    """Versions that decide the numbers in a report; optional RL packages only when installed."""
    from onnx_amc import __version__

    out: dict[str, str | None] = {"onnx-amc": __version__, "python": platform.python_version()}
    for name in _REQUIRED_DISTS:
        out[name] = _dist_version(name)
    for name in _OPTIONAL_DISTS:
        version = _dist_version(name)
        if version is not None:
            out[name] = version
    return out


def _utc_now() -> str:
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_report(command: str) -> dict[str, Any]:
    """A report skeleton with every key present, so callers only fill what they measured.

    ``status`` starts as ``"NONE"`` (no gates) and everything run-specific as ``None`` or an
    empty list; ``input``, ``device`` and ``before`` must be filled before :func:`validate`
    passes.
    """
    if command not in COMMANDS:
        raise ValueError(f"unknown report command {command!r}; use one of {', '.join(COMMANDS)}")
    return {
        "format": REPORT_FORMAT,
        "command": command,
        "created": _utc_now(),
        "versions": _versions(),
        "status": "NONE",
        "gates": [],
        "input": None,
        "output": None,
        "device": None,
        "before": None,
        "after": None,
        "budget": None,
        "search": None,
        "groups": [],
        "episodes": [],
        "measured": {"params": "counted", "macs": "counted", "latency": None, "metrics": None},
    }


def file_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Path, SHA-256 and size of a file, read in chunks so large models do not fill memory."""
    p = Path(path)
    digest = hashlib.sha256()
    size = 0
    with p.open("rb") as fh:
        for chunk in iter(functools.partial(fh.read, 1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"path": str(p), "sha256": digest.hexdigest(), "bytes": size}


def source_info(model: Any) -> dict[str, Any]:
    """:func:`file_info` of a path; for a model given in memory (bytes or ``ModelProto``), the
    hash and size of its serialized bytes, so reports identify it all the same."""
    if isinstance(model, str | os.PathLike):
        return file_info(model)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return {"path": "<in-memory model>", "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data)}


def to_jsonable(value: Any) -> Any:
    """A copy of ``value`` that strict JSON accepts.

    NaN and infinities become ``None`` (``json.dumps(allow_nan=False)`` must succeed), numpy
    scalars and arrays become Python numbers and lists, paths become strings, tuples lists.
    Anything else that JSON cannot hold raises ``TypeError`` naming its type.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, without importing numpy
    if callable(tolist) and type(value).__module__ == "numpy":
        return to_jsonable(tolist())
    raise TypeError(f"report value of type {type(value).__name__} is not JSON-serialisable")


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of report.json, shipped as package data."""
    return json.loads(_SCHEMA_PATH.read_text(encoding="utf-8"))


def _where(path: Any) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in path]
    return "report" + "".join(parts)


def validate(report: Mapping[str, Any]) -> None:
    """Check ``report`` (after :func:`to_jsonable`) against ``schema.json``.

    Raises:
        ValueError: one line naming the first offending key path and what is wrong, e.g.
            ``report.before.params: None is not of type 'integer'``.
    """
    import jsonschema

    try:
        doc = to_jsonable(report)
    except TypeError as exc:
        raise ValueError(f"report is not JSON-serialisable: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"report must be a JSON object, got {type(report).__name__}")
    validator_cls = jsonschema.validators.validator_for(load_schema())
    validator = validator_cls(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        message = " ".join(str(error.message).split())
        if len(message) > 300:
            message = message[:297] + "..."
        raise ValueError(f"{_where(error.absolute_path)}: {message}")
