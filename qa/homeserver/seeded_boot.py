"""Run a Synapse app the way the harness launches every embedded Synapse (fresh, seeded or restarted).

    python -m qa.homeserver.seeded_boot synapse.app.homeserver -c homeserver.yaml

Four things before the app's own main: jsonschema's schema checks are remembered (qa.homeserver.schema_checks:
Synapse re-checks the same power-levels and mentions schemas on every event), SQLite's transactions run on the
reactor thread instead of a one-thread pool (qa.homeserver.inline_db: handing every transaction to that thread and
back cost ~6 % of Synapse's CPU; MATRIX_QA_SYNAPSE_DB_THREAD=1 keeps the thread), its Prometheus metrics find their
labelled children through a cache (qa.homeserver.metric_labels; MATRIX_QA_SYNAPSE_METRIC_LABELS=1 keeps
prometheus_client's own), and, only when the harness asks for
it (no template exists yet for this Synapse, see qa.homeserver.db_template), the database schema is created here
and a copy kept as the pristine database template. The schema is created
the way Synapse's own startup does it (same `prepare_database` call, same config), so the server then finds an
up-to-date database and starts as usual. Building the template must never stop the server from starting:
on any failure the half-made database is removed and Synapse creates its schema itself, as it always did.
The app module is named on the command line so that process listings still show `synapse.app.homeserver`.

    python -m qa.homeserver.seeded_boot synapse.app.homeserver --await-config

imports the app (and installs the same things before any fork) and then serves orders on stdin
(qa.homeserver.early_synapse): one JSON line each with Synapse's arguments, the working directory, the file for its
output and the template request; for each, a Synapse is forked from this interpreter (qa.homeserver.synapse_zygote).
End of file: exit.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qa.homeserver import synapse_zygote
from qa.homeserver.inline_db import run_sqlite_inline
from qa.homeserver.metric_labels import KEEP_ENV as METRIC_LABELS_ENV
from qa.homeserver.metric_labels import cache_label_lookups
from qa.homeserver.schema_checks import remember_schema_checks
from qa.homeserver.synapse_zygote import orders_from  # noqa: F401  (the orders' parser, here as before)
from qa.shared.imports import imports_without_gc

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


def load_app(app_module: str, env: Mapping[str, str]) -> tuple[Any, str | None]:
    """Import the app (the import Synapse pays anyway, once) and install what runs inside it before its main. With
    it, the lines for Synapse's log when something could not be installed though not declined (its SQLite keeps its
    thread: no `make_pool` to wrap; the metrics keep their label lookups: another prometheus_client release): said
    there rather than silently, since each changes Synapse's CPU."""
    app = importlib.import_module(app_module)
    remember_schema_checks()
    notes = []
    if env.get(DB_THREAD_ENV) != "1" and not run_sqlite_inline():
        notes.append("matrix-qa: Synapse's SQLite keeps its database thread (qa.homeserver.inline_db found no "
                     "make_pool in synapse.storage.database to wrap)")
    if env.get(METRIC_LABELS_ENV) != "1" and (note := cache_label_lookups()):
        notes.append(note)
    return app, "\n".join(notes) or None


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m qa.homeserver.seeded_boot APP_MODULE [synapse arguments]")
    app_module, synapse_argv = argv[0], argv[1:]
    if synapse_argv == [AWAIT_FLAG]:
        raise SystemExit(_zygote(app_module))
    app, note = load_app(app_module, os.environ)
    if note:
        print(note, file=sys.stderr)  # our stderr is Synapse's log
    request = os.environ.pop(TEMPLATE_ENV, None)
    if request:
        _seed(app, synapse_argv, json.loads(request))
    sys.argv = [app_module, *synapse_argv]
    app.main()


def _zygote(app_module: str) -> int:
    """Import the app (Twisted's reactor kept out of it), then fork a Synapse per order (qa.homeserver.synapse_zygote).
    The collector is off for the import and the import's objects are frozen after it: a collection in a forked
    Synapse then never writes to (and so copies) the pages they share."""
    os.environ.pop(TEMPLATE_ENV, None)  # the orders carry each Synapse's template request
    synapse_zygote.answers_apart()
    proxy = synapse_zygote.install_proxy_reactor()
    failed = note = None
    with imports_without_gc():
        try:
            # The import every forked Synapse shares, and what runs inside it: installed here, once, before any fork.
            # The inline database is a module attribute (synapse.storage.database.make_pool) that every child
            # inherits, chosen from the environment the harness started us with (the one a spawned Synapse gets),
            # and made before the freeze below: its pages are shared like the import's.
            app, note = load_app(app_module, os.environ)
        except Exception:
            # Our output goes nowhere: each forked Synapse writes the traceback to the log its orders name, so the
            # run's "Synapse failed to start; see <log>" has something to show.
            app, failed = None, traceback.format_exc()
    gc.collect()
    gc.freeze()

    def boot(orders: dict[str, Any]) -> None:
        synapse_argv, template = _obey(orders)
        if failed is not None:
            sys.stderr.write(failed)
            raise SystemExit(1)
        if note:
            print(note, file=sys.stderr)
        if template:
            _seed(app, synapse_argv, template)
        sys.argv = [app_module, *synapse_argv]
        app.main()  # type: ignore[union-attr]

    return synapse_zygote.serve(proxy, boot)


if __name__ == "__main__":
    main(sys.argv[1:])
