"""The store's contract: the same assertions against the local SQLite store and a real PostgreSQL database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.unit.store.conftest import Backend

from authsome.errors import CredentialMissing, StoreUnavailable
from authsome.models import ClientConfig, Credential
from authsome.paths import Home
from authsome.secret import Secret
from authsome.store.agents import AgentStore, Rights
from authsome.store.backend import RecordDamaged
from authsome.store.credentials import CredentialStore

SECRET = "sk-contract-0123456789abcdefSECRET"
ROOT = Path(__file__).resolve().parents[3]


def api_key(value: str = SECRET) -> Credential:
    return Credential(kind="api_key", api_key=Secret(value))


def test_round_trip_and_metadata(backend: Backend) -> None:
    store = CredentialStore(backend.vault())
    store.save(
        "github",
        "work",
        Credential(
            kind="oauth2",
            access_token=Secret("gho_" + SECRET),
            refresh_token=Secret("ghr_" + SECRET),
            expires_at=time.time() + 3600,
            scopes=("repo", "read:org"),
            account="octocat",
            metadata={"base_url": "https://ghe.example"},
        ),
    )
    store.save("openai", "default", api_key())
    loaded = store.load("github", "work")
    assert loaded.access_token == Secret("gho_" + SECRET) and loaded.refresh_token == Secret("ghr_" + SECRET)
    assert loaded.scopes == ("repo", "read:org") and loaded.account == "octocat"
    assert loaded.metadata == {"base_url": "https://ghe.example"}
    assert [(c.provider, c.name, c.status) for c in store.connections()] == [
        ("github", "work", "connected"),
        ("openai", "default", "connected"),
    ]
    info = store.info("github", "work")
    assert info is not None and info.has_refresh_token and info.account == "octocat"
    assert store.providers_with_state() == ({"github", "openai"}, set())


def test_no_plaintext_secret_reaches_the_backend(backend: Backend) -> None:
    store = CredentialStore(backend.vault())
    store.save("openai", "default", api_key())
    store.save("github", "default", Credential(kind="oauth2", access_token=Secret("A_" + SECRET)))
    store.save_client("github", ClientConfig(client_id="cid", client_secret=Secret("C_" + SECRET)))
    raw = backend.raw()
    assert {key for _, key, _ in raw} == {"connection/openai/default", "connection/github/default", "client/github"}
    assert not any(SECRET in text for _, _, text in raw)
    assert all('"ciphertext"' in text for _, _, text in raw)


def test_keys_are_sorted_bytewise_and_prefixes_are_literal(backend: Backend) -> None:
    vault = backend.vault()
    with vault.transaction() as txn:
        for key in ("b/x", "a_b/1", "a%b/2", "aXb/3", "B/upper", "a/z", "a/Z"):
            txn.write(key, {"v": 1}, {})
    assert vault.keys() == sorted(["b/x", "a_b/1", "a%b/2", "aXb/3", "B/upper", "a/z", "a/Z"])
    assert vault.keys("a_b/") == ["a_b/1"]  # neither _ nor % is a wildcard
    assert vault.keys("a%") == ["a%b/2"]
    assert [k for k, _ in vault.read_prefix("a/")] == ["a/Z", "a/z"]
    with vault.transaction() as txn:
        assert txn.delete_prefix("a_") == 1
    assert vault.keys("aX") == ["aXb/3"]


def test_failed_transaction_changes_nothing(backend: Backend) -> None:
    store = CredentialStore(backend.vault())
    store.save("openai", "default", api_key())
    before = backend.raw()

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.vault.transaction():
        store.save("anthropic", "default", api_key("other"))
        store.set_status("openai", "default", "invalid", "x")
        store.delete("openai", "default")
        assert store.info("anthropic", "default") is not None  # a transaction sees its own writes
        raise Boom
    assert backend.raw() == before
    assert store.load("openai", "default").api_key == Secret(SECRET)


def test_uncommitted_writes_are_not_seen_by_others(backend: Backend) -> None:
    writer = CredentialStore(backend.vault())
    reader = CredentialStore(backend.vault(replica=True))
    inside, release = threading.Event(), threading.Event()

    def write() -> None:
        with writer.vault.transaction():
            writer.save("openai", "default", api_key())
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert inside.wait(10)
        assert reader.info("openai", "default") is None
    finally:
        release.set()
        thread.join()
    assert reader.load("openai", "default").api_key == Secret(SECRET)


def test_update_plain_keeps_sealed_secrets(backend: Backend) -> None:
    store = CredentialStore(backend.vault())
    store.save_client("github", ClientConfig(client_id="cid", client_secret=Secret("C_" + SECRET)))
    store.save("github", "default", Credential(kind="oauth2", access_token=Secret(SECRET), expires_at=1.0))
    store.set_status("github", "default", "invalid", "refresh token rejected")
    info = store.info("github", "default")
    assert info is not None and info.status == "invalid" and info.error == "refresh token rejected"
    assert store.load("github", "default").access_token == Secret(SECRET)
    client = store.client("github")
    assert client is not None and client.client_secret == Secret("C_" + SECRET)
    with store.vault.transaction() as txn:
        assert not txn.update_plain("connection/none/default", {"status": "invalid"})


def test_delete_one_and_all_of_a_provider(backend: Backend) -> None:
    store = CredentialStore(backend.vault())
    for name in ("default", "work", "home"):
        store.save("openai", name, api_key())
    store.save("openaix", "default", api_key())
    assert store.delete("openai", "work") == 1
    assert store.delete("openai", "work") == 0
    assert store.delete("openai") == 2
    assert [(c.provider, c.name) for c in store.connections()] == [("openaix", "default")]
    with pytest.raises(CredentialMissing):
        store.load("openai", "default")


def test_ciphertext_moved_to_another_record_fails_by_name(backend: Backend) -> None:
    store = CredentialStore(backend.vault())
    store.save("openai", "default", api_key("A" * 20))
    store.save("anthropic", "default", api_key("B" * 20))
    text = {key: value for _, key, value in backend.raw()}["connection/openai/default"]
    backend.raw_set("default", "connection/anthropic/default", text)
    with pytest.raises(StoreUnavailable, match="anthropic/default"):
        store.load("anthropic", "default")
    assert store.load("openai", "default").api_key == Secret("A" * 20)


def test_damaged_record_does_not_hide_the_others(backend: Backend) -> None:
    store = CredentialStore(backend.vault())
    store.save("openai", "default", api_key())
    store.save("anthropic", "default", api_key())
    backend.raw_set("default", "connection/openai/default", "{not json")
    infos = {(i.provider, i.name): i for i in store.connections()}
    assert infos[("openai", "default")].status == "invalid" and infos[("openai", "default")].error
    assert infos[("anthropic", "default")].status == "connected"
    with pytest.raises(StoreUnavailable, match="openai/default"):
        store.load("openai", "default")
    with pytest.raises(RecordDamaged):
        store.vault.read("connection/openai/default")


def test_profiles_are_isolated_and_bound(backend: Backend) -> None:
    default = CredentialStore(backend.vault("default"))
    work = CredentialStore(backend.vault("work"))
    default.save("openai", "default", api_key())
    assert work.info("openai", "default") is None and work.connections() == []
    work.save("openai", "default", api_key("x" * 10))
    text = {(p, k): v for p, k, v in backend.raw()}[("default", "connection/openai/default")]
    backend.raw_set("work", "connection/openai/default", text)
    with pytest.raises(StoreUnavailable, match="integrity"):
        work.load("openai", "default")


def test_another_master_key_cannot_open_the_records(backend: Backend, tmp_path: Path) -> None:
    CredentialStore(backend.vault()).save("openai", "default", api_key())
    other_home = Home.resolve(tmp_path / "other-home")  # its own, new master.key
    if backend.url is None:  # the local store lives in the home: bring the file, not the key
        (other_home.profile_dir("default") / "store.db").write_bytes(
            (backend.home.root / "profiles/default/store.db").read_bytes()
        )
    stranger = CredentialStore(backend.vault(home=other_home, replica=True))
    with pytest.raises(StoreUnavailable) as err:
        stranger.load("openai", "default")
    assert SECRET not in str(err.value)


def test_agents_on_the_store(backend: Backend) -> None:
    agents = AgentStore(backend.vault())
    _, token = agents.create("ci", Rights(providers=("openai",)), expires_in=3600)
    other = AgentStore(backend.vault(replica=True))  # another replica sees it, and its revocation
    found = other.get("ci")
    assert found is not None and found.verify(token.reveal()) and found.rights.providers == ("openai",)
    assert not any(token.reveal() in text for _, _, text in backend.raw())
    agents.revoke("ci")
    revoked = other.get("ci")
    assert revoked is not None and revoked.state() == "revoked"
    assert [a.name for a in other.list()] == ["ci"]


def test_single_flight_across_replicas(backend: Backend) -> None:
    """Replicas that all saw an expired token: under the lock, with a re-read, exactly one refreshes."""
    key = "connection/github/default"
    with backend.vault().transaction() as txn:
        txn.write(key, {"generation": 0}, {})
    replicas = [backend.vault(replica=True) for _ in range(4)]
    seen = threading.Barrier(len(replicas))
    refreshes: list[int] = []
    active, most = [0], [0]
    guard = threading.Lock()

    def replica(index: int) -> None:
        vault = replicas[index]
        stale = (vault.read(key) or {})["generation"]
        seen.wait(10)  # every replica saw the token expired before any takes the lock
        with vault.lock(key):
            with guard:
                active[0] += 1
                most[0] = max(most[0], active[0])
            current = (vault.read(key) or {})["generation"]
            if current == stale:  # still the expired one: refresh it
                refreshes.append(index)
                with vault.transaction() as txn:
                    txn.write(key, {"generation": current + 1}, {})
            with guard:
                active[0] -= 1

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(len(replicas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(refreshes) == 1 and most[0] == 1
    assert (backend.vault().read(key) or {})["generation"] == 1


def test_lock_is_reentrant_and_writes_under_it_commit_as_they_go(backend: Backend) -> None:
    vault = backend.vault()
    other = backend.vault(replica=True)
    with vault.lock("connection/a/default"), vault.lock("connection/a/default"), vault.lock():
        with vault.transaction() as txn:
            txn.write("connection/a/default", {"v": 2}, {})
        assert other.read("connection/a/default") == {"v": 2, "secrets": {}}


_HOLDER = """
import sys, time
from authsome.paths import Home
from authsome.store import keysource
from authsome.store.backend import open_store
home = Home.resolve(__import__("pathlib").Path(sys.argv[1]))
url = sys.argv[2] or None
vault = open_store(home, "default", lambda: keysource.select(home, {"AUTHSOME_KEY_SOURCE": "file"}), url)
with vault.lock("connection/github/default"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_holder_killed_with_sigkill_releases_the_lock(backend: Backend) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(backend.home.root), backend.url or ""],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        got = threading.Event()

        def take() -> None:
            with backend.vault(replica=True).lock("connection/github/default"):
                got.set()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        assert not got.wait(0.5), "the lock was taken while another process held it"
        child.send_signal(signal.SIGKILL)
        assert got.wait(10), "the lock of a killed process was not released"
        waiter.join(5)
    finally:
        child.kill()
        child.wait()


def test_audit_one_chain_from_many_writers(backend: Backend) -> None:
    """Replicas appending at once make one chain: every record numbered once, in order, and it verifies."""
    logs = [backend.audit(backend.vault(replica=True)) for _ in range(4)]
    start = threading.Barrier(len(logs))

    def write(index: int) -> None:
        start.wait(10)
        for n in range(10):
            logs[index].append("request", writer=index, n=n)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(logs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    records = list(logs[0].records())
    assert [r["seq"] for r in records] == list(range(1, 41))
    assert sorted((r["writer"], r["n"]) for r in records) == [(w, n) for w in range(4) for n in range(10)]
    result = logs[1].verify()
    assert result.ok and result.records == 40


def test_audit_tampering_is_detected(backend: Backend) -> None:
    log = backend.audit(backend.vault())
    for n in range(3):
        log.append("login", provider="openai", n=n)
    log.submit("request", host="api.openai.com")
    log.flush()
    lines = backend.audit_lines()
    assert len(lines) == 4 and log.verify().ok
    backend.set_audit_lines([lines[0], lines[1].replace('"openai"', '"github"'), *lines[2:]])
    assert not log.verify().ok and "seq 2" in (log.verify().problem or "")
    backend.set_audit_lines(lines[:3])  # the last record cut off
    result = log.verify()
    assert not result.ok and "removed" in (result.problem or "")
    backend.set_audit_lines(lines)
    assert log.verify().ok
