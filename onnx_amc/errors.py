"""Exceptions shared by the evaluation substrate and the CLI.

Only one class lives here on purpose: the CLI catches :class:`InputError`, prints its
message as a single line on stderr and exits with code 2.  Everything else that goes
wrong is a bug (ours or onnxruntime's) and should surface as a normal traceback.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(Exception):
    """Bad user input (files, shapes, dtypes, options).

    The message must be one line that names the offending file or input and says what
    is wrong, because the CLI shows it verbatim as the only feedback the user gets.
    """

    def __init__(self, message: str) -> None:
        # Keep the "one line" promise even if a caller interpolates a multi-line repr.
        super().__init__(" ".join(str(message).split()))
