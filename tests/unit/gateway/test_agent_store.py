"""Agent records in the profile's store: only the token's hash is kept; revoke, rotate and expiry are what they say."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from authsome.errors import UsageError
from authsome.paths import Home
from authsome.store import keysource
from authsome.store.agents import TOKEN_PREFIX, AgentStore, Rights
from authsome.store.vault import Vault

RIGHTS = Rights(providers=("openai",), connections={"github": ("work", "default")}, allow=("openai:GET /v1/**",))


def make_store(root: Path) -> AgentStore:
    home = Home.resolve(root)
    vault = Vault(
        home.profile_dir("default"), "default", lambda: keysource.select(home, {"AUTHSOME_KEY_SOURCE": "file"})
    )
    return AgentStore(vault)


def test_create_keeps_only_the_hash_of_the_token(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    agent, token = store.create("alice", RIGHTS)
    value = token.reveal()
    assert value.startswith(TOKEN_PREFIX) and len(value) >= len(TOKEN_PREFIX) + 43  # 32 random bytes
    assert "asag" not in repr(token) and value not in repr(agent)
    for d, _, files in os.walk(tmp_path / "home"):
        for f in files:
            assert value.encode() not in Path(d, f).read_bytes(), f
    assert store.get("alice") == agent
    assert agent.token_hash == hashlib.sha256(value.encode()).hexdigest()
    assert agent.verify(value) and not agent.verify(value + "x") and not agent.verify("")
    assert agent.rights == RIGHTS and agent.state() == "active"
    assert "token_hash" not in agent.to_dict() and agent.to_dict()["connections"] == {"github": ["work", "default"]}


def test_two_agents_get_different_tokens_and_names_are_checked(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    _, one = store.create("a", Rights())
    _, two = store.create("b", Rights())
    assert one.reveal() != two.reveal()
    with pytest.raises(UsageError, match="invalid agent name"):
        store.create("Bad Name", Rights())
    assert store.get("../x") is None and store.get("nobody") is None
    assert [a.name for a in store.list()] == ["a", "b"]


def test_an_active_agent_is_replaced_only_when_asked(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    _, old = store.create("alice", RIGHTS)
    with pytest.raises(UsageError, match="already exists"):
        store.create("alice", Rights())
    agent, new = store.create("alice", Rights(), replace=True)
    assert agent.verify(new.reveal()) and not agent.verify(old.reveal())
    store.revoke("alice")
    again, newest = store.create("alice", RIGHTS)  # a revoked name may be used again
    assert again.state() == "active" and again.verify(newest.reveal())


def test_revoke_and_rotate(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    _, first = store.create("alice", RIGHTS)
    rotated, second = store.rotate("alice")
    assert rotated.verify(second.reveal()) and not rotated.verify(first.reveal())
    assert rotated.rotated_at is not None and rotated.updated_at >= rotated.created_at
    revoked = store.revoke("alice")
    assert revoked.state() == "revoked" and revoked.revoked_at is not None
    assert store.revoke("alice").revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(UsageError, match="is revoked"):
        store.rotate("alice")
    with pytest.raises(UsageError, match="no agent called 'nobody'"):
        store.revoke("nobody")


def test_expiry(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    agent, _ = store.create("alice", RIGHTS, expires_in=3600)
    assert agent.expires_at is not None and agent.state() == "active"
    assert agent.state(now=agent.expires_at + 1) == "expired"
    assert agent.state(now=time.time() + 3599) == "active"
    with pytest.raises(UsageError, match="positive"):
        store.create("bob", RIGHTS, expires_in=0)
