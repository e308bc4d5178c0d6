"""Starts the child of ``authsome run`` where it cannot reach the store.

Run as ``python -I -S launcher.py [OPTIONS] -- CMD…``.

A standalone script (standard library only, no authsome import: it must start fast and carry nothing of the proxy's
memory). Options: ``--hide PATH`` (repeatable), ``--parent PID`` (the caller: the sandbox never outlives it),
``--require`` (exit 125 rather than run unisolated), ``--command-fd N`` (the command comes later on that pipe: the
sandbox is built while the caller's proxy starts, so that it costs the run next to nothing; see :class:`Order`).
Four processes, three of them this script:

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
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x400, 0x800, 0x1000, 0x4000, 0x40000
MS_RELATIME, ST_RELATIME = 0x200000, 0x1000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
CAP_VERSION_3 = 0x20080522
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
TERMINAL = (signal.SIGINT, signal.SIGQUIT)
SETUP_FAILED = 125
READY = "ready"  # what the init tells the keeper once the sandbox stands

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


def enter_namespaces(hide: list[str], read_only: list[str]) -> None:
    """Unshare user, mount and PID namespaces; map our ids; cover every path in ``hide``; make ``read_only`` so."""
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
            _remount_read_only(path)
    for path in read_only:
        if os.path.lexists(path):
            _mount(path, path, None, MS_BIND | MS_REC)
            _remount_read_only(path)


def _remount_read_only(path: str) -> None:
    """Make a bind mount read-only, keeping the flags its source mount has (a namespace may not clear them)."""
    flags = os.statvfs(path).f_flag
    kept = flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    if flags & ST_RELATIME:
        kept |= MS_RELATIME
    _mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


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


def exec_command(command: list[str], env: dict[str, str] | None = None) -> None:
    """Replace this process with the command; 127/126 like a shell when it cannot run."""
    try:
        if env is None:
            os.execvp(command[0], command)  # noqa: S606 - the user's command, as given
        os.execvpe(command[0], command, env)  # noqa: S606
    except FileNotFoundError:
        sys.stderr.write(f"authsome: {command[0]}: command not found\n")
        os._exit(127)
    except OSError as exc:
        sys.stderr.write(f"authsome: {command[0]}: {exc.strerror or 'cannot execute'}\n")
        os._exit(126)


class Order:
    """What to run: given on the command line, or (``--command-fd N``) read from a pipe once the caller is ready.

    The pipe carries NUL-separated fields: the number of arguments, the arguments, then ``NAME=value`` entries of
    the command's environment. End-of-file with nothing read: the caller gave up, nothing is run.
    """

    def __init__(self, argv: list[str], fd: int | None) -> None:
        self.argv, self.env, self.fd = argv, None, fd

    def receive(self) -> bool:
        """Read the order (once); False when the caller closed the pipe without one."""
        if self.fd is None or self.argv:
            return bool(self.argv)
        data = b""
        while chunk := os.read(self.fd, 65536):
            data += chunk
        os.close(self.fd)
        self.fd = None
        if not data:
            return False
        fields = [f.decode("utf-8", "surrogateescape") for f in data.split(b"\0")]
        count = int(fields[0])
        self.argv = fields[1 : 1 + count]
        self.env = dict(e.split("=", 1) for e in fields[1 + count :] if "=" in e)  # type: ignore[assignment]
        return bool(self.argv)

    def forget(self) -> None:
        """Close the pipe in a process that will not read it."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def report(pipe: int, message: str) -> None:
    os.write(pipe, message.encode())


def report_and_exit(pipe: int, exc: SetupError) -> None:
    """Tell the keeper why set-up failed (before the command started) and stop."""
    report(pipe, str(exc.args[0]))
    os._exit(SETUP_FAILED)


def init(pipe: int, cwd: str, order: Order) -> None:
    """PID 1 of the sandbox: fresh /proc, no capabilities, the command as its only child."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        try:
            os.chdir(cwd)  # re-resolved: a directory under a covered path now shows the cover, not the store
        except OSError as exc:
            raise SetupError(f"chdir {cwd}: {exc.strerror}", exc.errno) from None
    except SetupError as exc:
        report_and_exit(pipe, exc)
    report(pipe, READY)
    os.close(pipe)
    forwarder = Forwarder()
    if not order.receive():
        os._exit(0)
    pid = os.fork()
    if pid == 0:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        drop_capabilities()
        exec_command(order.argv, order.env)
    forwarder.target = pid
    drop_capabilities()
    os._exit(wait_for(pid, reap_all=True))


def sandbox(pipe: int, hide: list[str], read_only: list[str], cwd: str, order: Order) -> None:
    """The process that owns the namespaces: sets them up, starts the init, waits for it."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        enter_namespaces(hide, read_only)
    except SetupError as exc:
        report_and_exit(pipe, exc)
    forwarder = Forwarder()
    pid = os.fork()
    if pid == 0:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        init(pipe, cwd, order)
    os.close(pipe)
    order.forget()
    forwarder.target = pid
    os._exit(wait_for(pid, reap_all=False))


def keep(hide: list[str], read_only: list[str], parent: int, required: bool, order: Order) -> int:
    """The keeper: start the sandbox; where the kernel refuses one, Landlock, else the command unisolated (warned)."""
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
        sandbox(write_end, hide, read_only, cwd, order)
    os.close(write_end)
    forwarder.target = pid
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    why = b""
    while chunk := os.read(read_end, 4096):
        why += chunk
    os.close(read_end)
    if why == READY.encode():
        order.forget()
        return wait_for(pid, reap_all=False)
    wait_for(pid, reap_all=False)
    reason = why.decode(errors="replace") or "the sandbox ended early"
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    try:
        restrict_with_landlock(hide, read_only)
    except SetupError as exc:
        if required:
            sys.stderr.write(f"authsome: cannot isolate the child ({reason}; {exc.args[0]})\n")
            return SETUP_FAILED
        sys.stderr.write(
            f"authsome: warning: the child runs unisolated and could read the store: this system refuses namespaces"
            f" ({reason}) and Landlock ({exc.args[0]}); `authsome doctor` explains the fix\n"
        )
    if not order.receive():
        return 0
    exec_command(order.argv, order.env)
    return SETUP_FAILED


# Landlock (Linux 5.13+): where namespaces are refused, the command itself is restricted to everything but the hidden
# paths, and can then neither trace nor read /proc of any process outside its domain.
_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_LL_VERSION, _LL_PATH_BENEATH = 1, 1
_LL_FILE_RIGHTS = 1 | 2 | 4  # execute, write_file, read_file (+ truncate, ioctl_dev by ABI)
_LL_ABI_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_LL_READ_FILE, _LL_REFER = 4, 1 << 13
_LL_READ_ONLY = 1 | 4 | 8  # execute, read_file, read_dir


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def restrict_with_landlock(hide: list[str], read_only: list[str]) -> None:
    """Allow every access except beneath the hidden paths (reading only beneath ``read_only``); their ancestors keep
    all but reading files and linking."""
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
    readable = [os.path.realpath(p) for p in read_only if os.path.lexists(p)]
    special = set(hidden) | set(readable)
    on_the_way = {a for h in special for a in _ancestors(h)}
    for path in readable:
        _allow(ruleset, path, handled & _LL_READ_ONLY if os.path.isdir(path) else _LL_READ_FILE | 1)
    for directory in sorted(on_the_way):
        _allow(ruleset, directory, handled & ~(_LL_READ_FILE | _LL_REFER))
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for name in entries:
            path = os.path.join(directory, name)
            if path in on_the_way or path in special or os.path.islink(path):
                continue  # a symlink is not a place: its target has a rule of its own (a rule on it would follow it)
            _allow(ruleset, path, handled if os.path.isdir(path) else file_rights)
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
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
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
            enter_namespaces([], [])
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
    read_only: list[str] = []
    parent, required, command_fd = 0, False, None
    while argv and argv[0] != "--":
        option, argv = argv[0], argv[1:]
        if option == "--require":
            required = True
        elif option in ("--hide", "--read-only", "--parent", "--command-fd") and argv:
            value, argv = argv[0], argv[1:]
            if option == "--hide":
                hide.append(value)
            elif option == "--read-only":
                read_only.append(value)
            elif option == "--parent":
                parent = int(value)
            else:
                command_fd = int(value)
                os.set_inheritable(command_fd, False)  # never passed on to the command
        else:
            sys.stderr.write(f"authsome launcher: unknown option {option!r}\n")
            return SETUP_FAILED
    if len(argv) < 2 and command_fd is None:
        sys.stderr.write(
            "usage: launcher.py [--hide P]... [--read-only P]... [--parent PID] [--require] [--command-fd N]"
        )
        sys.stderr.write(" -- CMD...\n")
        return SETUP_FAILED
    return keep(hide, read_only, parent, required, Order(argv[1:], command_fd))


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: the command's status is known
