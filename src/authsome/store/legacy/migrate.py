"""The one-time import of a legacy home, in place: its files stay as they are (the authsome package keeps working
on them), every connection, OAuth client and custom provider is added to this project's layout beside them, once.

Before the first write, a private copy of the legacy files goes to ``backups/``. Progress is recorded per layout in
``legacy-import.json``: ``started`` (with the backup's path) after the copy, ``done`` at the end. An import that
stopped halfway is run again by the next command (the same backup is kept); what is already here is never replaced,
so a second run adds only what is missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authsome.errors import AuthsomeError, StoreUnavailable
from authsome.paths import Home, check_name, ensure_private_dir, file_lock, write_private_file
from authsome.store.credentials import CredentialStore
from authsome.store.legacy import files
from authsome.store.legacy.model import Layout, LegacyData, LegacyHome

STATE_FILE = "legacy-import.json"
LOCK_FILE = ".legacy-import.lock"
StoreFor = Callable[[str], CredentialStore]


@dataclass
class ImportReport:
    """What one import did (or why it could not run); :meth:`lines` is the notice the CLI prints."""

    home: LegacyHome
    backup: Path | None = None
    connections: dict[str, int] = field(default_factory=dict)  # profile -> connections added
    clients: int = 0
    providers: list[str] = field(default_factory=list)  # custom providers now in providers/
    kept: list[str] = field(default_factory=list)  # already here: left as they were
    skipped: list[str] = field(default_factory=list)  # not imported, with the reason
    unusable: dict[str, str] = field(default_factory=dict)  # custom provider -> why its file does not load here
    error: AuthsomeError | None = None

    def lines(self) -> list[str]:
        if self.error is not None:
            return [
                f"Could not import the home of {self.home.label} in {self.home.root}: {self.error.message}",
                f"Hint: {self.error.hint}; the next command tries again (`authsome doctor` shows what it finds)",
            ]
        per_profile = ", ".join(f"{name}: {n}" for name, n in self.connections.items())
        out = [
            f"Imported the home of {self.home.label} in {self.home.root}: "
            f"{sum(self.connections.values())} connection(s) ({per_profile or 'none'}), {self.clients} OAuth "
            f"client(s), custom providers: {', '.join(self.providers) or 'none'}.",
            f"Its own files are left as they were (that tool keeps working on them); a backup copy is in {self.backup}",
        ]
        out += [f"  kept (already here): {k}" for k in self.kept]
        out += [f"  not imported: {s}" for s in self.skipped]
        out += [f"  custom provider {name} does not load here yet: {why}" for name, why in self.unusable.items()]
        return out


def read_state(home: Home, layout: Layout) -> dict[str, Any] | None:
    """The recorded progress of importing the ``layout`` home, or None before one started."""
    state = _states(home).get(layout)
    return state if isinstance(state, dict) else None


def is_done(home: Home, layout: Layout) -> bool:
    state = read_state(home, layout)
    return state is not None and state.get("state") == "done"


def _states(home: Home) -> dict[str, Any]:
    """The whole state file: one entry per layout (a home may hold both: authsome upgraded in place)."""
    try:
        doc = json.loads((home.root / STATE_FILE).read_text())
    except (OSError, ValueError):  # absent, or unreadable: importing again only adds what is missing
        return {}
    return doc if isinstance(doc, dict) else {}


def _save_state(home: Home, layout: Layout, doc: Mapping[str, Any]) -> None:
    states = {**_states(home), layout: dict(doc)}
    write_private_file(home.root / STATE_FILE, (json.dumps(states, indent=2, sort_keys=True) + "\n").encode())


def run(
    home: Home,
    found: LegacyHome,
    read: Callable[[LegacyHome], LegacyData],
    store_for: StoreFor,
) -> ImportReport | None:
    """Import ``found`` into ``home`` unless that was done; None when another process finished it meanwhile."""
    with file_lock(home.root / LOCK_FILE):
        state = read_state(home, found.layout) or {}
        if state.get("state") == "done":
            return None
        report = ImportReport(found)
        try:
            data = read(found)
            previous = Path(state["backup"]) if isinstance(state.get("backup"), str) else None
            report.backup = previous if previous is not None and previous.is_dir() else _backup(home, found)
            base = {"layout": found.layout, "source": found.label, "backup": str(report.backup)}
            _save_state(
                home, found.layout, {**base, "state": "started", "started_at": state.get("started_at") or time.time()}
            )
            if found.layout == "0.2":
                from authsome.store.legacy.v02 import share_key_file

                share_key_file(found.root)
            _write(data, home, store_for, report)
            files.make_private(found.entries())
            _save_state(
                home, found.layout, {**base, "state": "done", "finished_at": time.time(), "summary": data.summary()}
            )
        except AuthsomeError as exc:  # reported; this command goes on, and the next one tries again
            report.error = exc
        return report


def _backup(home: Home, found: LegacyHome) -> Path:
    stem = f"authsome-{found.layout}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    name, n = stem, 1
    while (home.root / "backups" / name).exists():  # imported again within the second: both copies kept
        n += 1
        name = f"{stem}-{n}"
    return files.backup(home.root, found.entries(), name)


def _write(data: LegacyData, home: Home, store_for: StoreFor, report: ImportReport) -> None:
    report.skipped.extend(data.skipped)
    for profile in data.profiles:
        store = store_for(profile.name)
        added = 0
        with store.vault.transaction():
            for provider, client in profile.clients.items():
                if store.client(provider) is not None:
                    report.kept.append(f"{profile.name}: OAuth client of {provider}")
                    continue
                store.save_client(provider, client)
                report.clients += 1
            for conn in profile.connections:
                if _present(store, conn.provider, conn.name):
                    report.kept.append(f"{profile.name}: {conn.provider}/{conn.name}")
                    continue
                store.save(conn.provider, conn.name, conn.credential, conn.status)
                if conn.note:
                    store.set_status(conn.provider, conn.name, "invalid", conn.note)
                added += 1
        report.connections[profile.name] = added
        if added:
            from authsome.store.audit import AuditLog

            AuditLog(store.vault).append("import", source=data.home.label, connections=added)
    _write_providers(data, home, report)


def _write_providers(data: LegacyData, home: Home, report: ImportReport) -> None:
    """Custom provider definitions as files of this home's ``providers/``, as they were (registration validates)."""
    for definition in data.providers:
        if not definition.in_place:
            try:
                check_name("provider", definition.name)
            except AuthsomeError as exc:
                report.skipped.append(f"custom provider {definition.name!r}: {exc.message}")
                continue
            target = ensure_private_dir(home.providers_dir) / f"{definition.name}.json"
            if target.exists():
                report.kept.append(f"custom provider {definition.name} ({target})")
                continue
            write_private_file(target, definition.text.encode("utf-8"))
        report.providers.append(definition.name)


def _present(store: CredentialStore, provider: str, name: str) -> bool:
    try:
        return store.info(provider, name) is not None
    except StoreUnavailable:  # a damaged record here is still the user's: not replaced
        return True
