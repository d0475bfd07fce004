"""PostgreSQL for tests: the server from ``KASSAD_TEST_POSTGRES`` and a throwaway schema per test.

The PostgreSQL tests are part of the suite, not optional: an unreachable server fails them
(with the address tried and how to point elsewhere) instead of skipping them silently.
Import the fixtures into a test module (``from tests.support.postgres import pg_schema,
postgres_dsn``) or ask for them with ``request.getfixturevalue``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _where(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable KASSAD_TEST_POSTGRES)"
    return (f"{info.get('user', '?')}@{info.get('host', 'localhost')}:{info.get('port', 5432)}"
            f"/{info.get('dbname', '?')}")


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The test server's DSN, checked once per run."""
    dsn = os.environ.get("KASSAD_TEST_POSTGRES", DEFAULT_DSN)
    error: psycopg.Error | None = None
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        error = e  # failed outside the except block: no "during handling" noise in the report
    if error is not None:
        pytest.fail(
            f"PostgreSQL at {_where(dsn)} is unreachable: {error}\n"
            "The store database tests need a PostgreSQL server: start one (trust or password "
            "auth, any database) or set KASSAD_TEST_POSTGRES=postgresql://user:pw@host:5432/db",
            pytrace=False)
    return dsn


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name no one uses (not created: the storage creates it), dropped afterwards."""
    schema = f"kassad_test_{secrets.token_hex(6)}"
    try:
        yield schema
    finally:
        drop_schema(postgres_dsn, schema)
