"""Starts the child of ``authsome run`` where it cannot reach the store.

Run as ``python -I -S launcher.py [OPTIONS] -- CMD…``.

A standalone script (standard library only, no authsome import: it must start fast and carry nothing of the proxy's
memory). Options: ``--hide PATH`` (repeatable), ``--parent PID`` (the caller: the sandbox never outlives it),
``--require`` (exit 125 rather than run unisolated). Four processes, three of them this script:

1. the *keeper* (in the caller's namespaces) starts the sandbox and waits for it; when set-up fails before the
   command started, it runs the command itself, unisolated, after one warning line (or exits 125 if ``required``);
2. the *sandbox* unshares user, mount and PID namespaces, maps its own uid/gid, makes every mount private and covers
   each hidden path (a directory with an empty read-only tmpfs, a file with ``/dev/null``);
3. its child is PID 1 of the new namespace (the *init*): it mounts a fresh ``/proc`` (no process outside the sandbox
   can then be named, read or traced), drops every capability, forwards signals and reaps orphans;
4. the init's child drops its capabilities for good (empty bounding set, no new privileges) and execs the command.

Mounts made in a namespace the command cannot administer stay in place: without capabilities it cannot unmount the
covers, and a namespace it creates itself receives them locked. When the command exits, the init exits with its
status and the kernel kills whatever the command left behind. If ``authsome run`` dies, a parent-death signal takes
down the keeper, the sandbox and so everything in it. Set-up failures travel to the keeper on a close-on-exec pipe:
end-of-file with nothing read means the command was exec'd.

``--probe`` exits 0 when isolation works here, else prints why and exits 1. Exit status: the command's, 128+N if a
signal N ended it, 127 when it cannot be found, 126 when it cannot be executed, 125 when the sandbox could not be set
up.
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # the C module: `signal` imports enum (ms per run)
import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
CAP_VERSION_3 = 0x20080522
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
TERMINAL = (signal.SIGINT, signal.SIGQUIT)
SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """The sandbox could not be set up: (what failed, errno)."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}", err)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = _libc.mount(
        source.encode(), target.encode(), fstype.encode() if fstype else None, flags, data.encode() if data else None
    )
    _check(result, f"mount {target}")


def enter_namespaces(hide: list[str]) -> None:
    """Unshare user, mount and PID namespaces; map our ids; cover every path in ``hide``."""
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID), "unshare")
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as exc:
        raise SetupError(f"mapping the user: {exc.strerror}", exc.errno) from None
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # only now: a non-dumpable process cannot write its own id maps
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    for path in hide:
        if os.path.isdir(path):
            _mount("authsome-hidden", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=000")
        elif os.path.lexists(path):
            _mount("/dev/null", path, None, MS_BIND)
            _mount("none", path, None, MS_BIND | MS_RDONLY | 0x20 | MS_NOSUID | MS_NODEV | MS_NOEXEC)  # 0x20: remount


def drop_capabilities() -> None:
    """No capability now or after exec, and no way to gain one (setuid binaries included)."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop bounding set")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capset(header, data), "capset")


class Forwarder:
    """Passes the run's signals on to one process; terminal signals reach it already when we share its terminal."""

    def __init__(self) -> None:
        self.target = 0
        try:
            self.tty: int | None = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
        except OSError:
            self.tty = None
        for sig in FORWARDED:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if signum in TERMINAL and self._from_terminal():
            return
        if self.target:
            try:  # noqa: SIM105 - contextlib would cost milliseconds of import at every run
                os.kill(self.target, signum)
            except ProcessLookupError:
                pass

    def _from_terminal(self) -> bool:
        try:
            return self.tty is not None and os.tcgetpgrp(self.tty) == os.getpgrp()
        except OSError:
            return False


def status_code(status: int) -> int:
    """A wait status as an exit code: 128+N for a signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def wait_for(pid: int, *, reap_all: bool) -> int:
    """Wait for ``pid`` (reaping any other child on the way when ``reap_all``) and return its exit code."""
    while True:
        try:
            found, status = os.waitpid(-1 if reap_all else pid, 0)
        except ChildProcessError:
            return SETUP_FAILED
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        if found == pid:
            return status_code(status)


def exec_command(command: list[str]) -> None:
    """Replace this process with the command; 127/126 like a shell when it cannot run."""
    try:
        os.execvp(command[0], command)  # noqa: S606 - the user's command, as given
    except FileNotFoundError:
        sys.stderr.write(f"authsome: {command[0]}: command not found\n")
        os._exit(127)
    except OSError as exc:
        sys.stderr.write(f"authsome: {command[0]}: {exc.strerror or 'cannot execute'}\n")
        os._exit(126)


def report_and_exit(pipe: int, exc: SetupError) -> None:
    """Tell the keeper why set-up failed (before the command started) and stop."""
    os.write(pipe, str(exc.args[0]).encode())
    os._exit(SETUP_FAILED)


def init(pipe: int, cwd: str, command: list[str]) -> None:
    """PID 1 of the sandbox: fresh /proc, no capabilities, the command as its only child."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        try:
            os.chdir(cwd)  # re-resolved: a directory under a covered path now shows the cover, not the store
        except OSError as exc:
            raise SetupError(f"chdir {cwd}: {exc.strerror}", exc.errno) from None
        forwarder = Forwarder()
        pid = os.fork()
        if pid == 0:
            for sig in FORWARDED:
                signal.signal(sig, signal.SIG_DFL)
            drop_capabilities()
            exec_command(command)  # the pipe is close-on-exec: the keeper reads EOF, i.e. success
        os.close(pipe)
        forwarder.target = pid
        drop_capabilities()
    except SetupError as exc:
        report_and_exit(pipe, exc)
    os._exit(wait_for(pid, reap_all=True))


def sandbox(pipe: int, hide: list[str], cwd: str, command: list[str]) -> None:
    """The process that owns the namespaces: sets them up, starts the init, waits for it."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        enter_namespaces(hide)
    except SetupError as exc:
        report_and_exit(pipe, exc)
    forwarder = Forwarder()
    pid = os.fork()
    if pid == 0:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        init(pipe, cwd, command)
    os.close(pipe)
    forwarder.target = pid
    os._exit(wait_for(pid, reap_all=False))


def keep(hide: list[str], parent: int, required: bool, command: list[str]) -> int:
    """The keeper: start the sandbox, and the command unisolated (with a warning) when the kernel refuses one."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent and os.getppid() != parent:  # authsome died before the line above
        return SETUP_FAILED
    cwd = os.getcwd()
    if any(cwd == p or cwd.startswith(p.rstrip("/") + "/") for p in hide):
        sys.stderr.write(f"authsome: the working directory {cwd} is inside a path hidden from the child\n")
        return SETUP_FAILED
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    forwarder = Forwarder()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        sandbox(write_end, hide, cwd, command)
    os.close(write_end)
    forwarder.target = pid
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    why = b""
    while chunk := os.read(read_end, 4096):
        why += chunk
    os.close(read_end)
    if not why:
        return wait_for(pid, reap_all=False)
    wait_for(pid, reap_all=False)
    reason = why.decode(errors="replace")
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    try:
        restrict_with_landlock(hide)
    except SetupError as exc:
        if required:
            sys.stderr.write(f"authsome: cannot isolate the child ({reason}; {exc.args[0]})\n")
            return SETUP_FAILED
        sys.stderr.write(
            f"authsome: warning: the child runs unisolated and could read the store: this system refuses namespaces"
            f" ({reason}) and Landlock ({exc.args[0]}); `authsome doctor` explains the fix\n"
        )
    exec_command(command)
    return SETUP_FAILED


# Landlock (Linux 5.13+): where namespaces are refused, the command itself is restricted to everything but the hidden
# paths, and can then neither trace nor read /proc of any process outside its domain.
_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_LL_VERSION, _LL_PATH_BENEATH = 1, 1
_LL_FILE_RIGHTS = 1 | 2 | 4  # execute, write_file, read_file (+ truncate, ioctl_dev by ABI)
_LL_ABI_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_LL_READ_FILE, _LL_REFER = 4, 1 << 13


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def restrict_with_landlock(hide: list[str]) -> None:
    """Allow every access except beneath the hidden paths; their ancestors keep all but reading files and linking."""
    _libc.syscall.restype = ctypes.c_long
    abi = _libc.syscall(_LL_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(_LL_VERSION))
    if abi < 1:
        raise SetupError(f"Landlock: {os.strerror(ctypes.get_errno())}", ctypes.get_errno())
    handled = _LL_ABI_RIGHTS[max(v for v in _LL_ABI_RIGHTS if v <= abi)]
    file_rights = handled & (_LL_FILE_RIGHTS | (1 << 14) | (1 << 15))
    attr = ctypes.c_uint64(handled)
    ruleset = _libc.syscall(_LL_CREATE, ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
    if ruleset < 0:
        raise SetupError(f"Landlock ruleset: {os.strerror(ctypes.get_errno())}", ctypes.get_errno())
    hidden = [os.path.realpath(p) for p in hide if os.path.lexists(p)]
    on_the_way = {a for h in hidden for a in _ancestors(h)}
    for directory in sorted(on_the_way):
        _allow(ruleset, directory, handled & ~(_LL_READ_FILE | _LL_REFER))
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for name in entries:
            path = os.path.join(directory, name)
            if path in on_the_way or path in hidden:
                continue
            is_dir = os.path.isdir(path) and not os.path.islink(path)
            _allow(ruleset, path, handled if is_dir else file_rights)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or _libc.syscall(_LL_RESTRICT, ruleset, 0) != 0:
        raise SetupError(f"Landlock restrict: {os.strerror(ctypes.get_errno())}", ctypes.get_errno())
    os.close(ruleset)


def _ancestors(path: str) -> list[str]:
    out, parent = [], os.path.dirname(path)
    while True:
        out.append(parent)
        if parent == "/":
            return out
        parent = os.path.dirname(parent)


def _allow(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # vanished or unreadable: nothing to allow
    try:
        rule = _PathBeneath(rights, fd)
        if _libc.syscall(_LL_ADD_RULE, ruleset, _LL_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            raise SetupError(f"Landlock rule {path}: {os.strerror(ctypes.get_errno())}", ctypes.get_errno())
    finally:
        os.close(fd)


def probe() -> int:
    """Print the mechanism that would isolate a child here (``namespaces`` or ``landlock: <why not namespaces>``) and
    exit 0, or print why neither works and exit 1."""
    pid = os.fork()
    if pid == 0:
        try:
            enter_namespaces([])
        except SetupError as exc:
            os.write(1, str(exc.args[0]).encode())
            os._exit(1)
        os._exit(0)
    sys.stdout.flush()
    if status_code(os.waitpid(pid, 0)[1]) == 0:
        sys.stdout.write("namespaces\n")
        return 0
    abi = _libc.syscall(_LL_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(_LL_VERSION))
    if abi >= 1:
        sys.stdout.write(f"\nlandlock {abi}\n")
        return 0
    sys.stdout.write(f"; Landlock: {os.strerror(ctypes.get_errno())}\n")
    return 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["--probe"]:
        return probe()
    hide: list[str] = []
    parent, required = 0, False
    while argv and argv[0] != "--":
        option, argv = argv[0], argv[1:]
        if option == "--require":
            required = True
        elif option in ("--hide", "--parent") and argv:
            value, argv = argv[0], argv[1:]
            if option == "--hide":
                hide.append(value)
            else:
                parent = int(value)
        else:
            sys.stderr.write(f"authsome launcher: unknown option {option!r}\n")
            return SETUP_FAILED
    if len(argv) < 2:
        sys.stderr.write("usage: launcher.py [--hide PATH]... [--parent PID] [--require] -- COMMAND...\n")
        return SETUP_FAILED
    return keep(hide, parent, required, argv[1:])


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: the command's status is known
