"""Agents: the principals of ``authsome gateway``, as records ``agent/<name>`` in the profile's store.

An agent is a name, the SHA-256 of its token (the token itself is shown once, at ``create`` or ``rotate``, and never
stored), its rights (providers, connections, allow rules) and its life (expiry, revocation). A token is
``asag_`` + 32 random bytes (base64url); it is checked by hashing what a client presents and comparing the digests in
constant time. The hash is kept in the record's readable part: it is not a secret (nobody can go back from it to the
token), and checking a token then needs no decryption.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from authsome.errors import UsageError
from authsome.paths import check_name
from authsome.secret import Secret
from authsome.store.backend import Doc, RecordDamaged, RecordStore

TOKEN_PREFIX = "asag_"
TOKEN_BYTES = 32
AgentState = Literal["active", "revoked", "expired"]
_DUMMY_HASH = hashlib.sha256(b"authsome: no such agent").hexdigest()


def agent_key(name: str) -> str:
    return f"agent/{name}"


def new_token() -> Secret:
    """A fresh agent token: 256 random bits, URL-safe (it goes into a proxy URL as is)."""
    return Secret(TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES))


def token_hash(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Rights:
    """What an agent may use: ``providers`` (empty: every connected one), per provider the connections it may use
    (the first is the one its requests get; ``X-Authsome-Connection`` may pick another of them), and allow rules
    (``PROVIDER[/CONNECTION]:METHODS PATH-GLOB``; none: unrestricted) with where they came from."""

    providers: tuple[str, ...] = ()
    connections: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    allow: tuple[str, ...] = ()
    policy_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "providers": list(self.providers),
            "connections": {p: list(names) for p, names in sorted(self.connections.items())},
            "allow": list(self.allow),
            "policy_source": self.policy_source,
        }


@dataclass(frozen=True)
class Agent:
    """One agent record (never its token)."""

    name: str
    token_hash: str = field(repr=False)
    rights: Rights
    created_at: float
    updated_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    rotated_at: float | None = None

    def state(self, now: float | None = None) -> AgentState:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (time.time() if now is None else now):
            return "expired"
        return "active"

    def verify(self, token: str) -> bool:
        """Whether ``token`` is this agent's (constant time)."""
        return hmac.compare_digest(token_hash(token), self.token_hash)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        """The public view: everything but the token hash."""
        return {
            "name": self.name,
            "state": self.state(now),
            **self.rights.to_dict(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "rotated_at": self.rotated_at,
        }


def verify_unknown(token: str) -> bool:
    """Spend the time a real check takes, for a name that has no agent (always False)."""
    hmac.compare_digest(token_hash(token), _DUMMY_HASH)
    return False


class AgentStore:
    """Agents of one profile."""

    def __init__(self, vault: RecordStore) -> None:
        self.vault = vault

    def get(self, name: str) -> Agent | None:
        """The agent called ``name``, or None (also for a name that is not a valid agent name)."""
        try:
            check_name("agent", name)
        except UsageError:
            return None
        doc = self.vault.read(agent_key(name))
        return None if doc is None else _agent(name, doc)

    def require(self, name: str) -> Agent:
        check_name("agent", name)
        agent = self.get(name)
        if agent is None:
            raise UsageError(f"no agent called {name!r}", "run `authsome agent list` to see the agents")
        return agent

    def list(self) -> list[Agent]:
        """Every agent, by name; damaged records are skipped."""
        out = []
        for key, doc in self.vault.read_prefix("agent/"):
            if not isinstance(doc, RecordDamaged):
                out.append(_agent(key.split("/", 1)[1], doc))
        return out

    def create(
        self, name: str, rights: Rights, *, expires_in: float | None = None, replace: bool = False
    ) -> tuple[Agent, Secret]:
        """A new agent and its token (shown once). An active agent of that name is replaced only with ``replace``."""
        check_name("agent", name)
        if expires_in is not None and expires_in <= 0:
            raise UsageError("an agent's lifetime must be positive", "e.g. --expires 8h")
        token = new_token()
        now = time.time()
        with self.vault.transaction() as txn:
            existing = self.get(name)
            if existing is not None and existing.state(now) == "active" and not replace:
                raise UsageError(
                    f"agent {name} already exists",
                    f"`authsome agent rotate {name}` gives it a new token; `authsome agent revoke {name}` ends it",
                )
            doc: Doc = {
                "v": 1,
                "token_sha256": token_hash(token.reveal()),
                "providers": list(rights.providers),
                "connections": {p: list(n) for p, n in rights.connections.items()},
                "allow": list(rights.allow),
                "policy_source": rights.policy_source,
                "created_at": now,
                "updated_at": now,
                "expires_at": None if expires_in is None else now + expires_in,
                "revoked_at": None,
                "rotated_at": None,
            }
            txn.write(agent_key(name), doc, {})
        return _agent(name, doc), token

    def revoke(self, name: str) -> Agent:
        """Revoke an agent: its token stops working at the gateway's next check (within a second)."""
        agent = self.require(name)
        if agent.revoked_at is not None:
            return agent
        now = time.time()
        with self.vault.transaction() as txn:
            txn.update_plain(agent_key(name), {"revoked_at": now, "updated_at": now})
        return self.require(name)

    def rotate(self, name: str) -> tuple[Agent, Secret]:
        """A new token for an active agent; the old one stops working at the gateway's next check."""
        agent = self.require(name)
        state = agent.state()
        if state != "active":
            raise UsageError(
                f"agent {name} is {state}", f"create it again: `authsome agent create {name} …` (same rights or new)"
            )
        token = new_token()
        now = time.time()
        with self.vault.transaction() as txn:
            txn.update_plain(
                agent_key(name), {"token_sha256": token_hash(token.reveal()), "rotated_at": now, "updated_at": now}
            )
        return self.require(name), token

    def delete(self, name: str) -> bool:
        check_name("agent", name)
        with self.vault.transaction() as txn:
            return txn.delete(agent_key(name))


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, Sequence) and not isinstance(value, str) else ()


def _agent(name: str, doc: Doc) -> Agent:
    connections = doc.get("connections") or {}
    return Agent(
        name=name,
        token_hash=str(doc.get("token_sha256") or ""),
        rights=Rights(
            providers=_strings(doc.get("providers")),
            connections={str(p): _strings(n) for p, n in connections.items()} if isinstance(connections, dict) else {},
            allow=_strings(doc.get("allow")),
            policy_source=doc.get("policy_source"),
        ),
        created_at=float(doc.get("created_at") or 0),
        updated_at=float(doc.get("updated_at") or 0),
        expires_at=doc.get("expires_at"),
        revoked_at=doc.get("revoked_at"),
        rotated_at=doc.get("rotated_at"),
    )
