"""Knowledge-base logins, one per namespace, and the sharing Agents opt into.

The operator holds the admin login of the knowledge base (OVERSEER_KNOWLEDGE_ADMIN_URL, from a
Secret in its own namespace). It migrates the schema, creates a PostgreSQL login for a namespace
the first time an Agent there needs one, and writes it to the Secret `overseer-knowledge` in that
namespace, which goal pods read through `secretKeyRef`. PostgreSQL's row-level security then
holds each login to its namespace's rows (overseer.knowledge_schema, migration 3).
Sharing is written from the owner's Agent (`spec.knowledge.shareWith`) only: a reader has no way
to opt itself into another namespace's knowledge.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from overseer.knowledge_schema import migrate
from overseer.api.meta import LABEL_MANAGED_BY, MANAGED_BY
from overseer.kube import ApiError, Kube, path

logger = logging.getLogger(__name__)

SECRET_NAME = "overseer-knowledge"
SECRET_KEY = "url"
"""The Secret (in each namespace) and key goal pods read OVERSEER_DATABASE_URL from."""


@dataclass(frozen=True)
class Access:
    """Whether a namespace's goal pods have their knowledge-base login, as an Agent condition says it."""

    ready: bool
    reason: str
    message: str


def tenant_url(admin_url: str, role: str, password: str) -> str:
    """The admin connection string with the namespace's login in place of the admin's."""
    params = conninfo_to_dict(admin_url)
    params.update(user=role, password=password)
    return make_conninfo("", **params)


class KnowledgeTenants:
    """The operator's side of the knowledge base: one admin connection, used rarely (a namespace's
    first Agent, a change of what an Agent shares), so one at a time."""

    def __init__(self, admin_url: str, kube: Kube, *, recheck_seconds: float = 30.0,
                 connect_timeout: float = 5.0) -> None:
        self.admin_url = admin_url
        self.kube = kube
        self.recheck_seconds = recheck_seconds
        self.connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._checked: dict[str, float] = {}                  # namespace -> when its login was last found whole
        self._failed: dict[str, tuple[float, Access]] = {}     # namespace -> when and why provisioning failed
        self._shared: dict[tuple[str, str], tuple[str, ...]] = {}  # (namespace, agent) -> readers written

    def forget(self) -> None:
        """Check every login and share again on the next reconcile (drift repair)."""
        self._checked.clear()
        self._failed.clear()
        self._shared.clear()

    def recheck(self, namespace: str) -> None:
        """Check the namespace's login on its next reconcile, however recently it was found whole: a
        person changed one of its Agents (e.g. `kubectl annotate` to repair a lost login)."""
        self._checked.pop(namespace, None)
        self._failed.pop(namespace, None)

    async def close(self) -> None:
        async with self._lock:
            await self._disconnect()

    async def ensure(self, namespace: str) -> Access:
        """The namespace's login exists in PostgreSQL and in its Secret; created (or given a new
        password, when one of the two was lost) if not."""
        now = time.monotonic()
        checked = self._checked.get(namespace)
        if checked is not None and now - checked < self.recheck_seconds:
            return _ready(namespace)
        failed = self._failed.get(namespace)
        if failed is not None and now - failed[0] < self.recheck_seconds:
            # Agents are reconciled for every change of their goal counts: not a connection attempt each time.
            return failed[1]
        access = await self._ensure(namespace)
        if access.ready:
            self._checked[namespace] = time.monotonic()
            self._failed.pop(namespace, None)
        else:
            logger.warning("knowledge base: no login for namespace %s (%s): %s", namespace, access.reason,
                           access.message)
            self._failed[namespace] = (time.monotonic(), access)
        return access

    async def _ensure(self, namespace: str) -> Access:
        secret_path = path("v1", "secrets", namespace, SECRET_NAME)
        try:
            secret = await self.kube.get(secret_path)
        except ApiError as e:
            return Access(False, "SecretUnreadable", f"Secret {namespace}/{SECRET_NAME}: {e}")
        in_secret = _login_of(secret)
        async with self._lock:
            try:
                conn = await self._connection()
                cur = await conn.execute(
                    "SELECT t.role, t.password_sha256 FROM knowledge_tenants t JOIN pg_roles r ON r.rolname = t.role "
                    "WHERE t.namespace = %s", (namespace,))
                # The Secret holds the login and the password it has now; anything else (one of the
                # two lost, a password change whose Secret write failed) gets a new password.
                if in_secret is not None and await cur.fetchone() == in_secret:
                    return _ready(namespace)
                role, password = await provision(conn, namespace)
            except psycopg.Error as e:
                await self._disconnect()
                return Access(False, "DatabaseUnavailable",
                              f"the knowledge base (OVERSEER_KNOWLEDGE_ADMIN_URL) could not provision a login for "
                              f"namespace {namespace}: {str(e).strip() or type(e).__name__}")
        try:
            await self._write_secret(namespace, secret, tenant_url(self.admin_url, role, password))
        except ApiError as e:
            return Access(False, "SecretNotWritten", f"Secret {namespace}/{SECRET_NAME} could not be written: {e}")
        logger.info("knowledge base: login %s for namespace %s written to Secret %s", role, namespace, SECRET_NAME)
        return _ready(namespace)

    async def share(self, namespace: str, agent: str, readers: Sequence[str]) -> Access | None:
        """Make the agent's experiences and patterns readable by exactly `readers` (namespaces, or
        "*" for all); None when done, else why not."""
        key, wanted = (namespace, agent), tuple(sorted(set(readers)))
        if self._shared.get(key) == wanted:
            return None
        async with self._lock:
            try:
                conn = await self._connection()
                async with conn.transaction():
                    await conn.execute(
                        "DELETE FROM knowledge_shares WHERE namespace = %s AND agent = %s AND reader <> ALL(%s)",
                        (namespace, agent, list(wanted)))
                    await conn.execute(
                        "INSERT INTO knowledge_shares (namespace, agent, reader) SELECT %s, %s, unnest(%s::text[]) "
                        "ON CONFLICT DO NOTHING", (namespace, agent, list(wanted)))
            except psycopg.Error as e:
                await self._disconnect()
                return Access(False, "DatabaseUnavailable",
                              f"spec.knowledge.shareWith could not be written to the knowledge base: "
                              f"{str(e).strip() or type(e).__name__}")
        self._shared[key] = wanted
        return None

    async def unshare(self, namespace: str, agent: str) -> None:
        """The agent is gone: nothing of it stays shared (tried again on the next resync if down)."""
        if await self.share(namespace, agent, ()) is None:
            self._shared.pop((namespace, agent), None)

    async def _write_secret(self, namespace: str, secret: dict[str, Any] | None, url: str) -> None:
        data = {SECRET_KEY: base64.b64encode(url.encode()).decode()}
        if secret is None:
            created = await self.kube.create(path("v1", "secrets", namespace), {
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": SECRET_NAME, "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
                "data": data})
            if created is not None:
                return
        await self.kube.merge_patch(path("v1", "secrets", namespace, SECRET_NAME), {"data": data})

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = await psycopg.AsyncConnection.connect(self.admin_url, autocommit=True,
                                                     connect_timeout=max(2, round(self.connect_timeout)))
        try:
            # Any login can take an advisory lock; one holding the migration lock must not stall
            # the operator for good.
            await conn.execute("SET lock_timeout = '30s'")
            applied = await migrate(conn)
        except BaseException:
            await conn.close()
            raise
        if applied:
            logger.info("knowledge base: migrations %s applied", applied)
        self._conn = conn
        return conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close in any way; it is gone either way
                pass


async def provision(conn: psycopg.AsyncConnection[Any], namespace: str) -> tuple[str, str]:
    """Create the namespace's login, or give it a new password; returns (role, password).
    `conn` is the admin login, on a migrated schema."""
    cur = await conn.execute("SELECT overseer_role_name(%s)", (namespace,))
    row = await cur.fetchone()
    assert row is not None  # a function call returns one row
    role: str = row[0]
    password = secrets.token_urlsafe(32)
    # Only a SCRAM verifier reaches the server, so no statement log holds the password.
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
    await conn.execute("SELECT overseer_provision_tenant(%s, %s, %s)", (namespace, verifier, _sha256(password)))
    return role, password


async def provision_login(admin_url: str, namespace: str) -> str:
    """Migrate, provision the namespace's login and return its connection string (for tools and
    benchmarks; the operator keeps its connection open instead)."""
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await migrate(conn)
        role, password = await provision(conn, namespace)
    return tenant_url(admin_url, role, password)


def _ready(namespace: str) -> Access:
    return Access(True, "CredentialsReady",
                  f"goal pods read their knowledge-base login for namespace {namespace} from Secret {SECRET_NAME}")


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _login_of(secret: dict[str, Any] | None) -> tuple[str, str] | None:
    """(role, sha256 of the password) a Secret holds, or None if it holds no login."""
    encoded = ((secret or {}).get("data") or {}).get(SECRET_KEY)
    if not encoded:
        return None
    try:
        params = conninfo_to_dict(base64.b64decode(encoded).decode())
    except (ValueError, psycopg.Error):
        return None
    if not params.get("user") or not params.get("password"):
        return None
    return str(params["user"]), _sha256(str(params["password"]))
