"""Writing report.json, report.md and report.html atomically.

Everything is rendered in memory first and only then written, each file through a temporary
file in the same directory and ``os.replace``: a crash, a failed validation or Ctrl-C never
leaves a half-written or stale-mixed-with-new report behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnx_amc.errors import InputError

from .build import to_jsonable, validate

__all__ = ["REPORT_FILES", "dumps", "write_report"]

REPORT_FILES = {"json": "report.json", "md": "report.md", "html": "report.html"}


def dumps(report: Mapping[str, Any]) -> str:
    """Strict JSON text of a report (NaN/inf as null), indented for diffs."""
    return json.dumps(to_jsonable(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _file_mode() -> int:
    """0o666 minus the umask: what ``open()`` would give (mkstemp alone gives 0o600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _check_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"report directory {out_dir} exists and is not a directory")


def _prepare_dir(out_dir: Path) -> None:
    _check_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create report directory {out_dir}: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise InputError(f"report directory {out_dir} is not writable")


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Validate ``report`` and write report.json, report.md and report.html into ``out_dir``.

    Returns ``{"json": path, "md": path, "html": path}``.

    Raises:
        ValueError: the report does not match ``schema.json`` (a bug in the caller).
        InputError: ``out_dir`` cannot be created or written.
    """
    from .plots import render_plots
    from .render import render_html, render_markdown

    validate(report)
    doc = to_jsonable(report)
    out = Path(out_dir)
    _check_dir(out)  # fail fast, before the (slow) plots
    texts = {
        "json": dumps(doc),
        "md": render_markdown(doc),
        "html": render_html(doc, render_plots(doc)),
    }
    _prepare_dir(out)
    paths = {key: out / name for key, name in REPORT_FILES.items()}
    mode = _file_mode()
    try:
        for key, path in paths.items():
            _atomic_write(path, texts[key], mode)
    except OSError as exc:
        raise InputError(f"cannot write report into {out}: {exc.strerror or exc}") from None
    return paths
