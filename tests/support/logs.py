"""Keep the platform's stdout (JSON logs and EMF metrics, as Lambda and Fargate emit them) in a file, so that
a command's own output on the terminal stays readable. Call before the platform's modules are imported:
their loggers take stdout as they are created."""

import os
from typing import TextIO


def platform_output_to(path: str) -> TextIO:
    """Point file descriptor 1 at `path`; return a stream on the original stdout for the command's output."""
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
    return terminal
