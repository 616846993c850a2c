"""``--source URL`` and ``restore --to URL``: which source module a URL names.

Modules are imported only when their scheme is used (a files backup loads no database
code). A password written into a URL is refused: drengine's own command line is visible to
every user of the host in ``ps``; ``.pgpass``, ``PGPASSWORD``, ``~/.my.cnf``, ``MYSQL_PWD``
or ``?password_file=`` keep it private.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from drengine.core.errors import UsageError
from drengine.core.phases import Phases
from drengine.sources.base import ChunksOf, LoadOptions, Source

SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "sqlite", "block")


def split_url(url: str) -> SplitResult:
    try:
        u = urlsplit(url)
        u.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as e:
        raise UsageError(f"{url!r} is not a valid source URL: {e}") from None
    if u.scheme not in SCHEMES:
        raise UsageError(
            f"{url!r}: unknown source kind {u.scheme!r}; use one of "
            "postgresql://, mysql://, sqlite:///PATH, block:///PATH"
        )
    if u.password is not None:
        raise UsageError(
            f"{redact(url)}: a password in the URL would be visible to every user in ps; "
            "use .pgpass / ~/.my.cnf, PGPASSWORD / MYSQL_PWD, or ?password_file=FILE"
        )
    return u


def redact(url: str) -> str:
    """The URL without a password, for messages."""
    try:
        u = urlsplit(url)
        if u.password is None:
            return url
        netloc = (u.username or "") + "@" + (u.hostname or "")
        if u.port:
            netloc += f":{u.port}"
        return u._replace(netloc=netloc).geturl()
    except ValueError:
        return "<source URL>"


def local_path(u: SplitResult, what: str) -> str:
    """The absolute path of ``sqlite:///PATH`` or ``block:///PATH``, normalised."""
    if u.netloc or u.query:
        raise UsageError(
            f"{u.geturl()}: write {u.scheme}:///ABSOLUTE/PATH (three slashes, no options)"
        )
    path = unquote(u.path)
    if not path.startswith("/") or path == "/":
        raise UsageError(f"{u.geturl()}: {what} must be absolute")
    return os.path.normpath(path)


def source_from_url(url: str) -> Source:
    u = split_url(url)
    if u.scheme in ("postgresql", "postgres"):
        from drengine.sources.postgres import PostgresSource

        return PostgresSource.from_url(u)
    if u.scheme == "sqlite":
        from drengine.sources.sqlite import SqliteSource

        return SqliteSource.from_url(u)
    if u.scheme == "block":
        from drengine.sources.block import BlockSource

        return BlockSource.from_url(u)
    if u.scheme not in ("mysql", "mariadb"):
        raise UsageError(f"{redact(url)}: {u.scheme}:// sources are not supported")
    from drengine.sources.mysql import MysqlSource

    return MysqlSource.from_url(u)


# (the record's part, the URL, a function giving an entry path's verified chunks, options)
# -> what was loaded, one dict per database or device.
Loader = Callable[[dict[str, Any], SplitResult, ChunksOf, LoadOptions], list[dict[str, Any]]]


def loader(scheme: str) -> tuple[str, Loader]:
    """The kind of record ``restore --to`` needs for a scheme, and the function loading it."""
    if scheme in ("postgresql", "postgres"):
        from drengine.sources.postgres_restore import restore_databases

        return "postgresql", restore_databases
    if scheme == "sqlite":
        from drengine.sources.sqlite import restore_sqlite

        return "sqlite", restore_sqlite
    if scheme == "block":
        from drengine.sources.block import restore_block

        return "block", restore_block
    if scheme in ("mysql", "mariadb"):
        from drengine.sources.mysql_restore import restore_mysql

        return "mysql", restore_mysql
    raise UsageError(f"restore --to does not load {scheme}:// yet; use --target DIR")


# After ``restore --target DIR``: turn a restored stream into what it stands for (a SQLite
# dump into the database file); what was made, or None.
Finisher = Callable[[dict[str, Any], str, Phases], "dict[str, Any] | None"]


def finisher(kind: str) -> Finisher | None:
    if kind == "sqlite":
        from drengine.sources.sqlite import rebuild_restored

        return rebuild_restored
    return None
