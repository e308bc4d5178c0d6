"""The store's contract, kept by each backend: SQLite (:mod:`authsome.store.vault`, one file per profile, the
embedded default) and PostgreSQL (:mod:`authsome.store.pg`, one database shared by gateway replicas).

A backend holds JSON records by key, per profile. Secret fields are sealed here, in this process, before a record is
handed to the backend: AES-256-GCM envelopes whose associated data is ``authsome/v1|<profile>|<key>|<field>``, so a
backend never sees a plaintext secret, and a ciphertext moved to another record, field or profile fails to open. The
same bytes are valid in both backends (``authsome store migrate`` copies them as they are).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from authsome.errors import StoreUnavailable, UsageError
from authsome.secret import Secret

if TYPE_CHECKING:
    from authsome.paths import Home
    from authsome.store import keysource
    from authsome.store.audit import AuditLog

Doc = dict[str, Any]
URL_VARIABLE = "AUTHSOME_STORE_URL"
URL_SCHEMES = ("postgresql://", "postgres://")


class RecordDamaged(StoreUnavailable):
    """A record is not valid JSON, or one of its secrets fails to decrypt (tampered, swapped or wrong key)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"record {key!r} is damaged: {reason}", "remove it and log in again")
        self.key = key
        self.reason = reason


class RecordWriter(Protocol):
    """Writes inside :meth:`RecordStore.transaction`: all of them or none."""

    @property
    def vault(self) -> RecordStore: ...

    def write(self, key: str, doc: Doc, secrets: Mapping[str, Secret | None]) -> None:
        """Store ``doc`` under ``key`` with each given secret sealed and bound to (profile, key, field)."""

    def update_plain(self, key: str, changes: Doc) -> bool:
        """Merge ``changes`` into a record's non-secret fields, keeping its sealed secrets; False if absent."""
        ...

    def delete(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> int: ...


class RecordStore(Protocol):
    """The records of one profile (what :class:`~authsome.store.credentials.CredentialStore`, the agents and the
    audit head are built on)."""

    profile: str

    def master_key(self) -> bytes:
        """The master key, loaded once per process."""
        ...

    def describe(self) -> str:
        """Where the records are, for messages (never a password)."""
        ...

    def keys(self, prefix: str = "") -> list[str]:
        """Record keys starting with ``prefix``, sorted bytewise."""
        ...

    def read(self, key: str) -> Doc | None:
        """The record's document (secrets still sealed), or None; :class:`RecordDamaged` if not a JSON object."""
        ...

    def read_prefix(self, prefix: str) -> list[tuple[str, Doc | RecordDamaged]]:
        """Every record under ``prefix``, sorted; damaged ones come back as the error."""
        ...

    def reveal(self, key: str, doc: Doc, field: str) -> Secret | None:
        """Open one sealed field of a record read from ``key``."""
        ...

    def lock(self, name: str | None = None) -> AbstractContextManager[None]:
        """A lock across processes (and replicas) for single-flight work such as a refresh: ``name`` narrows it to
        one record where the backend can (PostgreSQL); SQLite locks the whole profile. Re-entrant within a thread."""
        ...

    def transaction(self) -> AbstractContextManager[RecordWriter]:
        """All-or-nothing writes; nested calls join the outer transaction."""
        ...


# -- sealing, shared by every backend -------------------------------------------------------------------------------
def aad(profile: str, key: str, field: str) -> str:
    """The associated data binding a sealed value to its profile, record and field."""
    return f"authsome/v1|{profile}|{key}|{field}"


def seal(master: bytes, profile: str, key: str, secrets: Mapping[str, Secret | None]) -> dict[str, Any]:
    """Each given secret as an envelope bound to (profile, key, field); None values are left out."""
    from authsome.store import crypto

    return {
        field: crypto.encrypt(master, value.reveal(), aad(profile, key, field))
        for field, value in secrets.items()
        if value is not None
    }


def unseal(master: Callable[[], bytes], profile: str, key: str, doc: Doc, field: str) -> Secret | None:
    """Open one sealed field (``master`` is called only when there is one); :class:`RecordDamaged` when it fails."""
    from authsome.store import crypto

    envelope = (doc.get("secrets") or {}).get(field)
    if envelope is None:
        return None
    try:
        return Secret(crypto.decrypt(master(), envelope, aad(profile, key, field)))
    except crypto.DecryptionError as exc:
        raise RecordDamaged(key, f"secret {field!r} failed its integrity check ({exc})") from None


def dump(doc: Doc) -> str:
    """A document as the text both backends store (sorted keys: the same bytes wherever it is written)."""
    return json.dumps(doc, sort_keys=True)


def parse(key: str, value: str) -> Doc:
    """A stored record's text as a document; :class:`RecordDamaged` when it is not a JSON object."""
    try:
        doc = json.loads(value)
    except ValueError:
        raise RecordDamaged(key, "not valid JSON") from None
    if not isinstance(doc, dict):
        raise RecordDamaged(key, "not a JSON object")
    return doc


# -- choosing a backend ---------------------------------------------------------------------------------------------
def parse_rows(rows: Iterable[tuple[str, str]]) -> list[tuple[str, Doc | RecordDamaged]]:
    """(key, stored value) rows as (key, record), a record that does not parse standing as its error."""
    out: list[tuple[str, Doc | RecordDamaged]] = []
    for key, value in rows:
        try:
            out.append((key, parse(key, value)))
        except RecordDamaged as exc:
            out.append((key, exc))
    return out


def check_url(url: str, *, on_command_line: bool = False) -> str:
    """A store URL as given, once it names a backend this program has (``postgresql://…``). One given on the command
    line must not hold a password: other processes can read a command line."""
    if not url.startswith(URL_SCHEMES):
        raise UsageError(
            "the store URL must start with postgresql:// (the local SQLite store needs no URL)",
            f"e.g. {URL_VARIABLE}=postgresql://authsome@db.example/authsome",
        )
    if on_command_line:
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(url)
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise UsageError(
                "the store URL on the command line holds a password (other processes can read a command line)",
                f"set {URL_VARIABLE} instead, or keep the password in PGPASSWORD or ~/.pgpass",
            )
    return url


def open_store(home: Home, profile: str, key_loader: Callable[[], keysource.KeySource], url: str | None) -> RecordStore:
    """The records of ``profile``: in the home's SQLite file when ``url`` is empty, else in that database."""
    if not url:
        from authsome.store.vault import Vault

        return Vault(home.profile_dir(profile), profile, key_loader)
    from authsome.store import pg

    return pg.PgVault(pg.database(check_url(url)), profile, key_loader)


def open_audit(home: Home, vault: RecordStore) -> AuditLog:
    """The audit trail kept with ``vault``: ``audit.jsonl`` beside a SQLite store, rows of the database's."""
    from authsome.store.audit import AuditLog
    from authsome.store.vault import Vault

    if isinstance(vault, Vault):
        return AuditLog(vault)
    from authsome.store import pg

    if not isinstance(vault, pg.PgVault):
        raise TypeError(f"no audit trail for a store of type {type(vault).__name__}")
    return pg.PgAuditLog(vault, pg.providers.local_dir(home.root, vault.db))


def profiles(home: Home, url: str | None) -> list[str]:
    """The profiles that hold records: the home's directories, or the database's."""
    if not url:
        return home.profiles()
    from authsome.store import pg

    return pg.database(check_url(url)).profiles()


# -- custom providers -----------------------------------------------------------------------------------------------
def providers_dir(home: Home, url: str | None, *, refresh: bool = True) -> Path:
    """The directory the provider registry reads user files from: the home's ``providers/``, or, with a database,
    this home's copy of the database's providers (brought up to date unless ``refresh`` is False: ``doctor``)."""
    if not url:
        return home.providers_dir
    from authsome.store import pg

    db = pg.database(check_url(url))
    mirror = pg.providers.mirror_dir(home.root, db)
    return pg.providers.sync(db, mirror) if refresh else mirror


def provider_saved(url: str | None, name: str, path: Path) -> None:
    """After the registry installed ``path``: with a database, store it there too (the copy is only a cache)."""
    if url:
        from authsome.store import pg

        pg.providers.put(pg.database(check_url(url)), name, path.read_text(encoding="utf-8"))


def provider_removed(url: str | None, name: str) -> bool:
    """After the registry removed a user file: with a database, remove it there; True if it was there."""
    if not url:
        return False
    from authsome.store import pg

    return pg.providers.delete(pg.database(check_url(url)), name)


# -- changes made by other replicas ---------------------------------------------------------------------------------
Changed = Callable[[str, str], None]


@contextlib.contextmanager
def watch(
    url: str | None, profile: str, changed: Changed, *, on_error: Callable[[BaseException], None] | None = None
) -> Iterator[None]:
    """While the block runs, hear of the changes other processes (gateway replicas) make to a shared store, as they
    commit: ``changed(what, name)``, on a thread of its own, with ``what`` one of ``provider`` (a custom provider:
    read the providers again), ``agent`` (an agent of ``profile``: its name), ``credential`` (a connection or an
    OAuth client of ``profile``: its record key), ``failure`` (a wrong proxy credential another process serving
    ``profile`` counted: the source address; see :func:`failure_teller`) or ``all`` (anything may have changed: the
    database was out of reach). With this machine's store there is nothing to hear."""
    if not url:
        yield
        return
    from authsome.store import pg

    def on_change(change: pg.changes.Change) -> None:
        if change.kind == "provider":
            changed("provider", change.name)
        elif change.kind == "all":
            changed("all", "")
        elif change.kind == "failure":
            if change.profile == profile:
                changed("failure", change.name)
        elif change.profile == profile and change.name.startswith("agent/"):
            changed("agent", change.name.removeprefix("agent/"))
        elif change.profile == profile and change.name.startswith(("connection/", "client/")):
            changed("credential", change.name)

    listener = pg.changes.Listener(pg.database(check_url(url)), on_change, on_error=on_error).start()
    try:
        yield
    finally:
        listener.stop()


def failure_teller(url: str | None, profile: str) -> Callable[[str], None] | None:
    """With a shared store: ``tell(address)``, which lets every other process serving ``profile`` from it count a
    wrong proxy credential this one saw (heard through :func:`watch`); returns at once. None with this machine's."""
    if not url:
        return None
    from authsome.store import pg

    return pg.changes.FailureTeller(pg.database(check_url(url)), profile).tell
