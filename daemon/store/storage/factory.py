"""The store database named by one URL, as the aggregator's configuration gives it.

- ``sqlite:///var/lib/kassad/store.db`` (absolute: three slashes then the path),
  ``sqlite:relative/store.db`` or a plain path: :class:`SqliteStorage`;
- ``postgresql://…`` or ``postgres://…`` (a libpq URI; ``?schema=name`` picks the PostgreSQL
  schema, default ``kassad``, and is not passed on to libpq): :class:`PostgresStorage`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .base import Storage
from .postgres import PostgresStorage
from .sqlite import SqliteStorage

_SQLITE_PREFIX = "sqlite:"


def _sqlite_path(url: str) -> Path:
    rest = url[len(_SQLITE_PREFIX):]
    if rest.startswith("//"):  # sqlite://<host>/path: only an empty host (or localhost) is ours
        host, _, path = rest[2:].partition("/")
        if host not in ("", "localhost"):
            raise ValueError(f"store database {url!r}: a SQLite database is a local file; "
                             "write sqlite:///absolute/path or sqlite:relative/path")
        rest = "/" + path
    if not rest or rest == "/":
        raise ValueError(f"store database {url!r}: no file path after sqlite:")
    return Path(unquote(rest))


def shown(url: str) -> str:
    """``url`` fit for a message or a log: a password in it is replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _postgres(url: str) -> PostgresStorage:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    if schemas and not schemas[-1]:
        raise ValueError(f"store database {shown(url)!r}: empty schema=")
    dsn = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query
                                                     if k != "schema"])))
    return PostgresStorage(dsn, schema=schemas[-1] if schemas else "kassad")


def open_storage(url: str) -> Storage:
    """The storage for ``url``, not yet opened (call ``await storage.open()``)."""
    scheme, sep, _ = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        return _postgres(url)
    if url.startswith(_SQLITE_PREFIX):
        return SqliteStorage(_sqlite_path(url))
    # A plain path has no scheme; "C:\\…"-style drive letters are not ours to guess at.
    if not sep and url.strip() and ":" not in url.split("/", 1)[0]:
        return SqliteStorage(Path(url))
    raise ValueError(f"store database {shown(url)!r}: expected sqlite:///path/to/store.db, a file "
                     "path, or postgresql://user@host:5432/dbname[?schema=name]")
