"""The CLI run in the test process (click's CliRunner), returned like ``subprocess.run``.

Why: the many bad-input cases end before any work, and a fresh interpreter per case (about two
seconds of imports) was most of their cost; the default suite must stay under ten minutes on
two cores. The tests that run ``python -m onnx_amc.cli`` in a subprocess keep the real
process's exit path (exit codes, stderr, no traceback) covered.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def invoke(*args: str | Path) -> subprocess.CompletedProcess:
    from click.testing import CliRunner

    from onnx_amc.cli import main

    argv = [str(a) for a in args]
    res = CliRunner().invoke(main, argv)
    return subprocess.CompletedProcess(argv, res.exit_code, res.stdout, res.stderr)
