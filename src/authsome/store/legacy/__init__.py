"""Homes written by the authsome package (PyPI ``authsome``; layouts 0.2.x and 0.5-0.7.x): found, read, imported.

:func:`detect` is cheap (a few ``stat`` calls) and runs before commands that open the store; :func:`read` decrypts
everything without writing; :func:`import_home` imports each once, in place (:mod:`authsome.store.legacy.migrate`).
The formats are described in :mod:`~authsome.store.legacy.v02` and :mod:`~authsome.store.legacy.v05`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

from authsome.errors import StoreUnavailable
from authsome.paths import Home
from authsome.store.legacy import migrate
from authsome.store.legacy.migrate import ImportReport, StoreFor, is_done, read_state
from authsome.store.legacy.model import LegacyData, LegacyHome


def detect(root: Path) -> list[LegacyHome]:
    """The homes the authsome package wrote in ``root``, newest layout first (an upgraded one keeps both)."""
    found = []
    if (root / "server" / "kv_store" / "cache.db").is_file() or (root / "server" / "authsome.db").is_file():
        found.append(LegacyHome(root, "0.5"))
    profiles = root / "profiles"
    if _json_key_file(root / "master.key") or (profiles.is_dir() and any(profiles.glob("*/metadata.json"))):
        found.append(LegacyHome(root, "0.2"))
    return found


def _json_key_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(64).lstrip().startswith(b"{")
    except OSError:
        return False


def read(found: LegacyHome, env: Mapping[str, str]) -> LegacyData:
    """Everything in ``found``, decrypted (only reads); :class:`StoreUnavailable` when its key is not available or
    its files cannot be read (one undecryptable record is skipped and named instead)."""
    from authsome.store.legacy import v02, v05

    reader = v05.read if found.layout == "0.5" else v02.read
    try:
        return reader(found, env)
    except OSError as exc:
        where = exc.filename or found.root
        raise StoreUnavailable(f"cannot read {where}: {exc.strerror or exc}", "check its owner and mode") from None
    except (ValueError, KeyError, TypeError, sqlite3.Error) as exc:  # never the text: it may quote a stored value
        raise StoreUnavailable(
            f"the home of {found.label} in {found.root} holds data this version cannot read ({type(exc).__name__})",
            "keep using that tool for it, or log in here again",
        ) from None


def import_home(home: Home, env: Mapping[str, str], store_for: StoreFor) -> list[ImportReport]:
    """Import each legacy home found in ``home`` once, the newest first (what it brings wins over an older one's
    copy of the same connection); empty when there is none or each was imported already."""
    reports = []
    for found in detect(home.root):
        if not is_done(home, found.layout):
            report = migrate.run(home, found, lambda h: read(h, env), store_for)
            if report is not None:
                reports.append(report)
    return reports


__all__ = ["ImportReport", "LegacyData", "LegacyHome", "detect", "import_home", "is_done", "read", "read_state"]
