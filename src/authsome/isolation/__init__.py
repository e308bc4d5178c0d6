"""Keeping the child of ``authsome run`` away from the store and from the proxy's memory.

Two layers, both Linux-only (elsewhere the child runs unisolated and :func:`status` says so):

- :func:`isolated_command` wraps the child's command in ``launcher.py``: user, mount and PID namespaces in which the
  authsome home, the proxy CA's directory and any other secret path are covered, ``/proc`` shows only the sandbox,
  and the command holds no capability (see the launcher's docstring for the process tree). Where the kernel refuses
  namespaces, Landlock denies access beneath those paths and to every process outside the child's domain.
- :func:`harden_process` makes the calling process (the proxy) non-dumpable: no ptrace attach, no
  ``/proc/<pid>/mem`` or ``environ`` for a process of the same user without ``CAP_SYS_PTRACE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAUNCHER = Path(__file__).with_name("launcher.py")
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4


@dataclass(frozen=True)
class Status:
    """Whether the child of ``run`` can be isolated here, and if not, why (one line)."""

    available: bool
    mechanism: str
    reason: str = ""


def supported_platform() -> bool:
    return sys.platform.startswith("linux")


def isolated_command(
    command: Sequence[str], hide: Iterable[Path], *, read_only: Iterable[Path] = (), required: bool = False
) -> list[str]:
    """``command`` wrapped in the launcher: it starts with every path in ``hide`` covered and ``read_only`` so."""
    argv = [sys.executable, "-I", "-S", str(LAUNCHER), "--parent", str(os.getpid())]
    for path in dict.fromkeys(_resolved(p) for p in hide):
        argv += ["--hide", path]
    for path in dict.fromkeys(_resolved(p) for p in read_only):
        argv += ["--read-only", path]
    if required:
        argv.append("--require")
    return [*argv, "--", *command]


class SandboxedChild:
    """A sandbox started ahead of its command: it is built while the proxy starts, then :meth:`start` runs the command.

    The launcher gets only ``PATH`` in its own environment; the command's environment travels on the order pipe.
    """

    def __init__(
        self,
        hide: Iterable[Path],
        read_only: Iterable[Path] = (),
        *,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
    ) -> None:
        read_end, self._order = os.pipe()
        argv = [
            *isolated_command([], hide, read_only=read_only)[:-1],
            "--command-fd",
            str(read_end),
            "--",
        ]  # [:-1]: without its "--"
        try:
            self.process = subprocess.Popen(
                argv,
                pass_fds=(read_end,),
                env={"PATH": os.environ.get("PATH", os.defpath)},
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
        finally:
            os.close(read_end)

    def start(self, command: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Send the command and its environment; the process is the one to wait for and to signal."""
        fields = [str(len(command)), *command, *(f"{k}={v}" for k, v in env.items())]
        data = b"\0".join(f.encode("utf-8", "surrogateescape") for f in fields)
        try:
            with os.fdopen(self._order, "wb") as pipe:
                pipe.write(data)
        except BrokenPipeError:
            pass  # the sandbox is gone already: its exit status says why
        self._order = -1
        return self.process

    def cancel(self) -> None:
        """No command after all (the proxy failed, a signal came first): the sandbox exits without running one."""
        if self._order >= 0:
            os.close(self._order)
            self._order = -1
        self.process.wait()


def _resolved(path: Path) -> str:
    return str(path.expanduser().resolve())


def status() -> Status:
    """Probe (in throw-away processes) which mechanism would isolate the child of ``run`` here."""
    if not supported_platform():
        return Status(False, "none", f"process isolation is implemented for Linux only (this is {sys.platform})")
    probe = subprocess.run(
        [sys.executable, "-I", "-S", str(LAUNCHER), "--probe"], capture_output=True, text=True, check=False
    )
    lines = probe.stdout.strip().splitlines() or [probe.stderr.strip() or "the probe failed"]
    if probe.returncode == 0 and lines[-1] == "namespaces":
        return Status(True, "namespaces")
    if probe.returncode == 0 and lines[-1].startswith("landlock"):
        return Status(True, "landlock", f"user namespaces are refused ({lines[0]})")
    return Status(False, "none", f"user namespaces are refused and Landlock is unavailable ({' '.join(lines)})")


def harden_process() -> None:
    """Make this process non-dumpable (Linux): a same-user process without CAP_SYS_PTRACE cannot read or trace it."""
    if supported_platform():
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def die_with_parent() -> None:
    """For a forked child before exec (``--no-isolate``): SIGKILL when the process that started it dies."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def is_dumpable() -> bool:
    """Whether this process can be read by same-user processes (for tests and ``doctor``)."""
    if not supported_platform():
        return True
    import ctypes

    return bool(ctypes.CDLL(None, use_errno=True).prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE
