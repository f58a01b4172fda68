"""Small helpers of scripts/batch/common.sh that need ppp_dist or Python (not meant to be run by hand).

  keys CONFIG [--set S.K=V ...]   print raw_key=, gt_key=, head= of the resolved config
  infer-sets EXP_DIR              print the --set values that make a new experiment predict with EXP_DIR's
                                  best validated checkpoint and [vote] parameters (or its last checkpoint)
  ensure-db DSN                   create the PostgreSQL database the DSN names, if it does not exist
  redact DSN                      the DSN without its password, for printing

Errors are one sentence on stderr with exit code 2, like ppp-dist's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _fail(message: str) -> int:
    print(f"batch_helper: error: {message}", file=sys.stderr)
    return 2


def keys(configs: list[str], overrides: list[str]) -> int:
    from ppp_dist.config import load_config

    config = load_config(configs, overrides)
    print(f"raw_key={config.data.raw_key}")
    print(f"gt_key={config.data.gt_key}")
    print(f"head={config.model.head}")
    print(f"num_channels={config.data.num_channels}")
    return 0


def _toml_value(value) -> str:
    """One TOML value on one line (tomli_w puts each list item on its own line)."""
    import tomli_w

    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[4:].strip()


def infer_sets(exp: str) -> int:
    from ppp_dist.experiment import ExperimentPaths

    paths = ExperimentPaths(Path(exp))
    if not paths.checkpoints():
        return _fail(f"no checkpoint in {paths.train_dir}; run the train step first")
    best = paths.best()
    checkpoint = paths.checkpoint("best" if best else "last").resolve()
    sets = {"prediction.checkpoint": str(checkpoint)}
    for key, value in (best or {}).get("params", {}).items():
        sets[f"vote.{key}"] = list(value) if isinstance(value, tuple) else value
    for key, value in sets.items():
        print(f"{key}={_toml_value(value)}")
    print(f"checkpoint {checkpoint.name} ({'best of validate' if best else 'last; no validation run'})",
          file=sys.stderr)
    return 0


def _dsn_parts(dsn: str) -> dict[str, str]:
    from psycopg2.extensions import parse_dsn

    return parse_dsn(dsn)


def ensure_db(dsn: str) -> int:
    try:
        import psycopg2
        from psycopg2 import sql
    except ImportError:
        return _fail("PostgreSQL needs psycopg2: pip install 'ppp_dist[postgres]'")
    parts = _dsn_parts(dsn)
    name = parts.get("dbname", "")
    if not name:
        return _fail(f"the DSN {redact(dsn)} names no database")
    try:  # the database exists and answers: nothing to do
        psycopg2.connect(dsn, connect_timeout=10).close()
        return 0
    except psycopg2.OperationalError as err:
        if f'"{name}" does not exist' not in str(err):
            return _fail(f"cannot reach PostgreSQL at {redact(dsn)} ({str(err).strip().splitlines()[0]})")
    admin = dict(parts, dbname="postgres")
    try:
        conn = psycopg2.connect(connect_timeout=10, **admin)
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.close()
    except psycopg2.Error as err:
        return _fail(f"cannot create database {name} at {redact(dsn)} ({str(err).strip().splitlines()[0]}); "
                     "create it yourself (createdb) or grant the role CREATEDB")
    print(f"created PostgreSQL database {name}", file=sys.stderr)
    return 0


def redact(dsn: str) -> str:
    import re

    dsn = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batch_helper.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("keys")
    p.add_argument("config", nargs="+")
    p.add_argument("--set", action="append", default=[], dest="overrides")
    sub.add_parser("infer-sets").add_argument("exp")
    sub.add_parser("ensure-db").add_argument("dsn")
    sub.add_parser("redact").add_argument("dsn")
    args = parser.parse_args(argv)
    from ppp_dist.errors import PppDistError

    try:
        if args.command == "keys":
            return keys(args.config, args.overrides)
        if args.command == "infer-sets":
            return infer_sets(args.exp)
        if args.command == "ensure-db":
            return ensure_db(args.dsn)
        print(redact(args.dsn))
        return 0
    except PppDistError as err:
        return _fail(str(err))


if __name__ == "__main__":
    sys.exit(main())
