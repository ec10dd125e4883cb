"""The ``onnx-amc`` console script's entry point, outside the ``onnx_amc`` package on purpose.

Importing ``onnx_amc`` takes one to two seconds (onnx, numpy, ONNX Runtime). A Ctrl-C in that
window arrived before ``onnx_amc.cli`` could handle it, and Python printed a traceback. Importing
the package here, inside a handler, ends that Ctrl-C as every other one ends: one line, exit 130.
This module must stay free of imports that take time.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from onnx_amc.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("onnx-amc: interrupted\n")
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
