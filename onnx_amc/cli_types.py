"""Click parameter types and file checks shared by the commands (onnx_amc.cli, the profile
command).

Why a module of its own: ``onnx_amc.targets.profile_cli`` is registered by ``onnx_amc.cli``
and must not import it back at import time; both take these from here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import click

from .errors import InputError

__all__ = ["FINITE", "FiniteRange", "check_outputs", "external_data_files", "input_files"]


class _Finite(click.types.FloatParamType):
    """A float that is a number: click's float takes 'nan' and 'inf', which every range check
    then lets through (nan compares false both ways)."""

    name = "number"

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


class FiniteRange(click.FloatRange):
    """``click.FloatRange`` that refuses nan and inf."""

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


FINITE = _Finite()


def external_data_files(model: str | os.PathLike[str]) -> list[Path]:
    """The external-data files a model file names (relative to its folder), without reading
    them: an output written onto one of them would destroy the input's weights."""
    import onnx
    from onnx import external_data_helper

    try:
        proto = onnx.load(os.fspath(model), load_external_data=False)
    except Exception:  # not parseable: loading it later says why, in one line
        return []
    base = Path(model).parent
    return [base / e.value
            for t in external_data_helper._get_all_tensors(proto)
            if external_data_helper.uses_external_data(t)
            for e in t.external_data if e.key == "location" and e.value]


def input_files(*models: str | os.PathLike[str] | None,
                others: Iterable[str | os.PathLike[str] | None] = ()) -> Iterator[Path]:
    """The files a command reads: each model with its external-data files, and the others
    given (calibration data, a policy, a profile; ``None`` for an option not given).

    Lazy: finding the external-data files parses the model, which :func:`check_outputs`
    needs only when an output exists already (only an existing file can be overwritten)."""
    for m in models:
        if m is not None:
            yield Path(m)
            yield from external_data_files(m)
    yield from (Path(o) for o in others if o is not None)


def check_outputs(outputs: Iterable[str | os.PathLike[str]],
                  inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    """Refuse, before any work, every output that would overwrite one of the command's inputs
    (the model, its external data, calibration data, a policy, a profile) or that cannot be
    written (a folder, a missing or unwritable folder).

    One check for every file a command writes, sidecars and report files included: an audit
    found `compress X.policy.json -o X` and `prune -o model.data` overwriting their inputs
    through names that the OUT-is-MODEL check alone never saw."""
    outs = [Path(o) for o in outputs]
    for o in outs:
        if o.is_dir():
            raise InputError(f"output '{o}' is a folder")
        if not o.parent.resolve().is_dir():
            raise InputError(f"output folder '{o.parent}' does not exist")
    existing = [o for o in outs if o.exists()]
    if existing:  # only an existing file can be overwritten
        ins = [Path(i) for i in inputs if i is not None]
        for o in existing:
            for i in ins:
                if i.exists() and os.path.samefile(o, i):
                    raise InputError(f"output '{o}' is an input of this command ('{i}'): "
                                     "refusing to overwrite it")
    for parent in {o.parent.resolve() for o in outs}:
        _check_writable(parent)


def _check_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``: os.access says yes to root on /proc and on
    read-only mounts, and the write that fails after a long search loses the search."""
    probe = folder / f".onnx-amc-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write into folder '{folder}': {exc.strerror}") from None
