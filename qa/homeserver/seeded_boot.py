"""Run a Synapse app the way the harness launches every embedded Synapse (fresh, seeded or restarted).

    python -m qa.homeserver.seeded_boot synapse.app.homeserver -c homeserver.yaml

Three things before the app's own main: jsonschema's schema checks are remembered (qa.homeserver.schema_checks:
Synapse re-checks the same power-levels and mentions schemas on every event), SQLite's transactions run on the
reactor thread instead of a one-thread pool (qa.homeserver.inline_db: handing every transaction to that thread and
back cost ~6 % of Synapse's CPU; MATRIX_QA_SYNAPSE_DB_THREAD=1 keeps the thread), and, only when the harness asks for
it (no template exists yet for this Synapse, see qa.homeserver.db_template), the database schema is created here
and a copy kept as the pristine database template. The schema is created
the way Synapse's own startup does it (same `prepare_database` call, same config), so the server then finds an
up-to-date database and starts as usual. Building the template must never stop the server from starting:
on any failure the half-made database is removed and Synapse creates its schema itself, as it always did.
The app module is named on the command line so that process listings still show `synapse.app.homeserver`.

    python -m qa.homeserver.seeded_boot synapse.app.homeserver --await-config

imports the app and then waits for its orders on stdin (qa.homeserver.early_synapse): one JSON line with Synapse's
arguments, the working directory, the file for its output and the template request. End of file: exit, unused.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qa.homeserver.inline_db import run_sqlite_inline
from qa.homeserver.schema_checks import remember_schema_checks

TEMPLATE_ENV = "MATRIX_QA_SYNAPSE_DB_TEMPLATE"
# "1": Synapse keeps its database thread (Twisted's pool), as before qa.homeserver.inline_db. Read from the
# environment this process started with (a waiting Synapse, --await-config: the harness's, at the run's start).
DB_THREAD_ENV = "MATRIX_QA_SYNAPSE_DB_THREAD"
AWAIT_FLAG = "--await-config"


def _create_schema(app: Any, argv: list[str]) -> Path:
    """Create the schema in the configured SQLite database; returns its path."""
    from synapse.storage.database import make_conn
    from synapse.storage.engines import create_engine
    from synapse.storage.prepare_database import prepare_database

    config = app.load_or_generate_config(argv)
    (db_config,) = config.database.databases
    if db_config.config.get("name") != "sqlite3":
        raise RuntimeError("only SQLite databases have templates")
    engine = create_engine(db_config.config)
    with make_conn(db_config=db_config, engine=engine, default_txn_name="template",
                   server_name=config.server.server_name) as conn:
        engine.check_database(conn)
        prepare_database(conn, engine, config, databases=db_config.databases)
        conn.commit()
    return Path(db_config.config["args"]["database"])


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def _seed(app: Any, argv: list[str], request: dict[str, str]) -> None:
    from qa.homeserver.db_template import publish

    db_path = Path(request["db"])
    if db_path.exists():
        return  # not a fresh server: nothing to seed, and nothing pristine to keep
    try:
        created = _create_schema(app, argv)
    except Exception as exc:  # any Synapse version's surprise: fall back to Synapse's own schema creation
        _remove_database(db_path)
        print(f"matrix-qa: no database template this time (schema creation failed: {exc!r})", file=sys.stderr)
        return
    problem = publish(created, Path(request["dir"]), request["key"])
    if problem:
        print(f"matrix-qa: {problem}", file=sys.stderr)


def orders_from(line: bytes) -> dict[str, Any] | None:
    """Pure: the orders in one stdin line; None at end of file (the harness let go of us unused)."""
    if not line.strip():
        return None
    orders = json.loads(line)
    if not isinstance(orders, dict) or not all(isinstance(orders.get(k), str) for k in ("cwd", "stdout")) \
            or not isinstance(orders.get("argv"), list) or not all(isinstance(a, str) for a in orders["argv"]):
        raise SystemExit(f"matrix-qa: bad orders on stdin: {line[:200]!r}")
    return orders


def _obey(orders: dict[str, Any]) -> tuple[list[str], dict[str, str] | None]:
    """As if started with these arguments, in this directory, output to this file and nothing on stdin."""
    os.chdir(orders["cwd"])
    out = os.open(orders["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    nothing = os.open(os.devnull, os.O_RDONLY)
    for fd, to in ((nothing, 0), (out, 1), (out, 2)):
        os.dup2(fd, to)
    os.close(out)
    os.close(nothing)
    return list(orders["argv"]), orders.get("template")


def load_app(app_module: str, env: Mapping[str, str]) -> Any:
    """Import the app (the import Synapse pays anyway, once) and install what runs inside it before its main."""
    app = importlib.import_module(app_module)
    remember_schema_checks()
    if env.get(DB_THREAD_ENV) != "1":
        run_sqlite_inline()
    return app


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m qa.homeserver.seeded_boot APP_MODULE [synapse arguments]")
    app_module, synapse_argv = argv[0], argv[1:]
    waiting = synapse_argv == [AWAIT_FLAG]
    failed = None
    try:
        app = load_app(app_module, os.environ)
    except Exception:
        if not waiting:
            raise
        # Waiting, our output goes nowhere until the orders name the log: keep the traceback for it, so the run's
        # "Synapse failed to start; see <log>" has something to show.
        failed = traceback.format_exc()
    request = os.environ.pop(TEMPLATE_ENV, None)
    if waiting:
        orders = orders_from(sys.stdin.buffer.readline())
        if orders is None:
            return  # the harness let go of us unused
        synapse_argv, template = _obey(orders)
        if failed is not None:
            sys.stderr.write(failed)
            raise SystemExit(1)
        request = json.dumps(template) if template else None
    if request:
        _seed(app, synapse_argv, json.loads(request))
    sys.argv = [app_module, *synapse_argv]
    app.main()


if __name__ == "__main__":
    main(sys.argv[1:])
