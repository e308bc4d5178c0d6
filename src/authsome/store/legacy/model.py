"""What is read from a home of the authsome package, in this project's terms (nothing here touches a file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from authsome.models import ClientConfig, ConnectionStatus, Credential

Layout = Literal["0.2", "0.5"]
LABELS: dict[Layout, str] = {"0.2": "authsome 0.2.x", "0.5": "authsome 0.5-0.7.x"}
# The entries each layout owns at the top of the home (what is backed up and made private before an import).
ENTRIES: dict[Layout, tuple[str, ...]] = {
    "0.2": ("config.json", "master.key", "version", "audit.log", "logs", "providers", "profiles"),
    "0.5": ("client", "server"),
}


@dataclass(frozen=True)
class LegacyHome:
    """A home (or the part of one) written by the authsome package."""

    root: Path
    layout: Layout

    @property
    def label(self) -> str:
        return LABELS[self.layout]

    def entries(self) -> list[Path]:
        """Its own files and directories at the top of the home, as they exist."""
        return [self.root / name for name in ENTRIES[self.layout] if (self.root / name).exists()]


@dataclass(frozen=True)
class LegacyConnection:
    """One connection as it will be stored here."""

    provider: str
    name: str
    credential: Credential
    status: ConnectionStatus = "connected"
    note: str | None = None  # why it is stored as invalid (e.g. revoked before the import)


@dataclass
class LegacyProfile:
    """One profile here, from a profile (0.2) or a vault (0.5+) of the authsome package."""

    name: str
    origin: str  # where it came from, for the report: "profiles/work", "vault vault_3f2a… (me@example.org)"
    connections: list[LegacyConnection] = field(default_factory=list)
    clients: dict[str, ClientConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class LegacyProvider:
    """A custom provider definition: a file already in ``providers/`` (0.2) or JSON kept in a database (0.5+)."""

    name: str
    text: str
    in_place: bool  # already a file of this home's providers/ directory


@dataclass
class LegacyData:
    """Everything read from a legacy home, plus what could not be read and why."""

    home: LegacyHome
    profiles: list[LegacyProfile] = field(default_factory=list)
    providers: list[LegacyProvider] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """'profiles default (2 connections, 1 OAuth client), work (1 connection); custom providers acme'."""
        parts = []
        for p in self.profiles:
            what = [_count(len(p.connections), "connection")]
            if p.clients:
                what.append(_count(len(p.clients), "OAuth client"))
            parts.append(f"{p.name} ({', '.join(what)})")
        text = ("profiles " + ", ".join(parts)) if parts else "no stored credentials"
        if self.providers:
            text += "; custom providers " + ", ".join(p.name for p in self.providers)
        return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
