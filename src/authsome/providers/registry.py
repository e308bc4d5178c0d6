"""The provider registry: bundled definitions shipped with the package, overridden by user files of the same name.

Bundled files are read and validated once, lazily, on first use; user files (``$AUTHSOME_HOME/providers/*.json``,
and ``*.jsonc`` as authsome 0.7.x writes them) are read on first use too. A user file that does not parse is skipped
and reported by :meth:`Registry.problems`. Any file may carry ``//`` and ``/* */`` comments (JSONC).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from authsome.errors import ProviderNotFound, UsageError
from authsome.paths import check_name, ensure_private_dir, write_private_file
from authsome.providers.schema import Provider, parse_owned, parse_provider

BUNDLED_DIR = Path(__file__).parent / "bundled"
MAX_FILE_SIZE = 256 * 1024
SUFFIXES = (".json", ".jsonc")
_bundled_cache: dict[str, Provider] | None = None
# A string literal (kept) or a comment (blanked, newlines kept so that error line numbers stay right).
_JSONC_RE = re.compile(r'"(?:\\.|[^"\\\n])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)


def strip_comments(text: str) -> str:
    """JSONC to JSON: ``//`` and ``/* */`` comments outside strings become blanks (a JSON file is unchanged)."""
    if "/" not in text:
        return text
    return _JSONC_RE.sub(lambda m: m[0] if m[0][0] == '"' else re.sub(r"[^\n]", " ", m[0]), text)


def load_file(path: Path, *, source: str) -> Provider:
    """Read and validate one provider JSON file; :class:`UsageError` naming the file (and line) when it is bad."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read provider file {path}: {exc.strerror}", "check the path") from None
    if len(raw) > MAX_FILE_SIZE:
        raise UsageError(f"provider file {path} is larger than {MAX_FILE_SIZE // 1024} KiB", "is it the right file?")
    try:
        text = raw.decode("utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:  # JSONC (authsome 0.7.x), or a real error: its line numbers are kept
            data = json.loads(strip_comments(text))
    except UnicodeDecodeError:
        raise UsageError(f"provider file {path} is not UTF-8 text", "save it as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"provider file {path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            "fix the JSON syntax (// and /* */ comments are allowed)",
        ) from None
    return parse_owned(data, source=source, path=path)


def bundled() -> dict[str, Provider]:
    """Every bundled provider by name, loaded and validated once per process."""
    global _bundled_cache
    if _bundled_cache is None:
        found = {}
        for entry in sorted(os.scandir(BUNDLED_DIR), key=lambda e: e.name):
            if entry.name.endswith(".json"):
                prov = load_file(Path(entry.path), source="bundled")
                found[prov.name] = prov
        _bundled_cache = found
    return _bundled_cache


class Registry:
    """Bundled providers plus the user's own files in ``user_dir`` (a user file wins over a bundled one)."""

    def __init__(self, user_dir: Path) -> None:
        self.user_dir = Path(user_dir)
        self._user: dict[str, Provider] | None = None
        self._problems: list[tuple[Path, str]] = []

    # -- reading --------------------------------------------------------------------------------------------------
    def _users(self) -> dict[str, Provider]:
        if self._user is None:
            found: dict[str, Provider] = {}
            problems: list[tuple[Path, str]] = []
            try:
                entries = sorted(os.scandir(self.user_dir), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                entries = []
            for entry in entries:
                if not entry.name.endswith(SUFFIXES) or entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                try:
                    prov = load_file(path, source="user")
                except UsageError as exc:
                    problems.append((path, exc.message))
                    continue
                if path.stem != prov.name:
                    problems.append((path, f"provider file {path}: name {prov.name!r} does not match the file name"))
                    continue
                if prov.name in found:
                    problems.append(
                        (path, f"provider file {path}: {prov.name!r} is already defined by {found[prov.name].path}")
                    )
                    continue
                found[prov.name] = prov
            self._user, self._problems = found, problems
        return self._user

    def _merged(self) -> dict[str, Provider]:
        return {**bundled(), **self._users()}

    def get(self, name: str) -> Provider:
        """The provider called ``name``; :class:`ProviderNotFound` with a did-you-mean hint when there is none."""
        user = self._users().get(name)
        if user is not None:
            return user
        prov = bundled().get(name)
        if prov is not None:
            return prov
        raise ProviderNotFound(f"unknown provider {name!r}", _suggest(name, self.names()))

    def all(self) -> list[Provider]:
        """Every usable provider, sorted by name (user files that fail to parse are left out)."""
        return sorted(self._merged().values(), key=lambda p: p.name)

    def names(self) -> list[str]:
        return sorted(self._merged())

    def problems(self) -> list[tuple[Path, str]]:
        """User provider files that cannot be used, each with a one-line reason."""
        self._users()
        return list(self._problems)

    def is_user(self, name: str) -> bool:
        return name in self._users()

    # -- writing --------------------------------------------------------------------------------------------------
    def register(self, source_file: Path, *, force: bool = False) -> Provider:
        """Validate ``source_file`` (JSON or JSONC) and install it as ``<user_dir>/<name>.json`` (0600, atomic).

        The installed file is plain JSON (comments dropped); with ``force`` it replaces a ``<name>.jsonc`` too.
        """
        source_file = Path(source_file)
        prov = load_file(source_file, source="user")
        target = self.user_dir / f"{prov.name}.json"
        existing = [p for p in self._user_files(prov.name) if p.exists()]
        if existing and not force:
            raise UsageError(
                f"a user provider named {prov.name!r} is already registered ({existing[0]})",
                f"use `authsome register {source_file} --force` to replace it",
            )
        ensure_private_dir(self.user_dir)
        text = json.dumps(prov.to_dict(), indent=2, ensure_ascii=False) + "\n"
        write_private_file(target, text.encode("utf-8"))
        for other in existing:
            if other != target:
                other.unlink()
        self._user = None
        return parse_provider(prov.to_dict(), source="user", path=target)

    def _user_files(self, name: str) -> list[Path]:
        return [self.user_dir / f"{name}{suffix}" for suffix in SUFFIXES]

    def unregister(self, name: str) -> bool:
        """Delete the user file of ``name``; False when there is none (bundled providers cannot be removed)."""
        try:
            check_name("provider", name)
        except UsageError:
            return False
        targets = [p for p in self._user_files(name) if p.is_file()]
        for target in targets:
            target.unlink()
        self._user = None
        return bool(targets)


def _suggest(name: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        return f"did you mean {' or '.join(repr(c) for c in close)}? run `authsome list` to see every provider"
    return "run `authsome list` to see every provider"
