"""Passwords of database connection strings, kept out of everything ppp_dist prints, logs or saves.

A PostgreSQL DSN comes in two forms and both carry passwords:

* a URL, ``postgresql://user:secret@host:5432/db`` (also ``?password=secret`` in its query);
* libpq's key=value form, ``host=db1 user=me password=secret dbname=graph`` (values may be quoted:
  ``password='a b'``).

:func:`redact` hides the passwords of both forms anywhere in a text (messages, log lines, printed configs)
as ``***``; :func:`without_password` drops the password of one DSN, so that what is left still connects
with the password from ``~/.pgpass``, ``PGPASSWORD`` or ``PPP_DIST_DB_DSN``.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@  (the user part may be empty; the password runs to the last '@' before the host)
_URL = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):(?P<secret>[^\s'\"]*)@(?=[^@\s'\"]*(?:[/?\s'\"]|$))")
# password=value, PGPASSWORD=value, password = 'quoted value', &password=value in a URL query
_VALUE = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s'\"&;,)]+"
_KEY_VALUE = re.compile(r"(?P<head>\b[A-Za-z_]*password\s*=\s*)(?P<secret>" + _VALUE + ")", re.IGNORECASE)
_KEY_VALUE_PAIR = re.compile(r"(?:^|(?<=\s))[A-Za-z_]*password\s*=\s*(?:" + _VALUE + r")\s*", re.IGNORECASE)
_QUERY_PAIR = re.compile(r"(?P<sep>[?&])password=[^&#\s]*(?P<end>&?)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the password of every DSN in it (URL or key=value form) replaced by ``***``.

    Examples
    --------
    >>> redact("cannot reach postgresql://me:secret@db1/graph")
    'cannot reach postgresql://me:***@db1/graph'
    >>> redact("host=db1 password='s e' dbname=g")
    'host=db1 password=*** dbname=g'
    """
    if "password" not in text.lower() and "://" not in text:
        return text
    text = _URL.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m.group('head')}{MASK}", text)


def without_password(dsn: str) -> str:
    """The DSN ``dsn`` with its password removed (URL or key=value form); the rest is kept as written.

    Examples
    --------
    >>> without_password("postgresql://me:secret@db1:5432/graph?sslmode=require&password=x")
    'postgresql://me@db1:5432/graph?sslmode=require'
    >>> without_password("host=db1 password=secret dbname=graph")
    'host=db1 dbname=graph'
    """
    if "://" in dsn:
        dsn = _URL.sub(lambda m: f"{m.group('head')}@", dsn)
        dsn = _QUERY_PAIR.sub(lambda m: m.group("sep") if m.group("end") else "", dsn)
        return dsn
    return _KEY_VALUE_PAIR.sub("", dsn).strip()


def has_password(dsn: str) -> bool:
    """Whether the DSN ``dsn`` carries a password (in either form)."""
    return without_password(dsn) != dsn.strip()


__all__ = ["MASK", "has_password", "redact", "without_password"]
