"""The command-line interface: parse, call :mod:`authsome.api`, render. No logic of its own."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` at once: flush stdout and stderr, then skip the interpreter's teardown.

    For ``run``, once its child has exited and everything that must reach the disk (the audit trail) is written:
    tearing down the proxy's modules, threads and event loop would cost the user about as long as starting them did.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing more to say anyway
            stream.flush()
    os._exit(code)
