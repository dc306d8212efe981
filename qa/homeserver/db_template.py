"""A pristine Synapse database, made once per Synapse version and schema, copied into each new server.

Creating Synapse's schema on an empty SQLite file is most of what a boot spends after importing Synapse
(hundreds of delta files, ~0.3-0.5 s on a loaded 2-core machine). The result is the same for every run of
the same Synapse, so the first run keeps a copy (built by `qa.homeserver.seeded_boot` right after the schema
is created and before the server writes anything) and later runs start from that copy.

What keeps it safe:

* The key covers the Synapse version, a fingerprint of its schema files (a dev install whose version string
  did not change still gets a new key when a delta is added), the database engine and the server name, and
  this module's own format number. An upgrade never finds an old template: it finds none and builds one.
* A template is trusted only if its metadata names the same key and the file's SHA-256 matches, and the copy
  passes SQLite's quick_check, has a schema version, and holds no users, rooms, events, devices or tokens.
  Anything else and the template is deleted (the next cold boot rebuilds it), never used.
* Templates are published by renaming a finished directory into place, so a reader never sees half of one,
  and two runs building at once just let one of them win.

Only the standard library here: the harness must not import Synapse (most of a second) to use this.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
from pathlib import Path

FORMAT = 1
DB_NAME = "homeserver.db"
META_NAME = "template.json"
KEEP_TEMPLATES = 8
# Tables that must be empty in a pristine database: a template holding any of these rows would leak state
# from whatever created it into every later run.
MUST_BE_EMPTY = ("users", "rooms", "events", "devices", "access_tokens", "room_memberships", "local_media_repository")


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """$XDG_CACHE_HOME/matrix-qa/synapse-db, falling back to ~/.cache as the XDG spec says."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "matrix-qa" / "synapse-db"


def schema_fingerprint(package_dir: Path) -> str:
    """Names, sizes and mtimes of every file under synapse/storage/schema: cheap, and changes with any delta."""
    digest = hashlib.sha256()
    root = package_dir / "storage" / "schema"
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def template_key(*, synapse_version: str, schema: str, server_name: str, engine: str = "sqlite3") -> str:
    """One name per (format, Synapse version, schema files, engine, server name)."""
    material = json.dumps([FORMAT, synapse_version, schema, engine, server_name])
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def installed_synapse_key(server_name: str) -> str | None:
    """The key for the Synapse this interpreter would run, or None if that cannot be told without importing it."""
    spec = importlib.util.find_spec("synapse")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        return None
    try:
        version = importlib.metadata.version("matrix-synapse")
        schema = schema_fingerprint(Path(locations[0]))
    except (importlib.metadata.PackageNotFoundError, OSError):
        return None
    return template_key(synapse_version=version, schema=schema, server_name=server_name)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pristine_problem(db_path: Path) -> str | None:
    """None if the file is a sound Synapse database with nothing in it yet, else what is wrong with it."""
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    try:
        check = conn.execute("PRAGMA quick_check").fetchone()
        if not check or check[0] != "ok":
            return f"quick_check says {check[0] if check else 'nothing'}"
        if not conn.execute("SELECT version FROM schema_version").fetchone():
            return "no schema version"
        for table in MUST_BE_EMPTY:
            if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():  # fixed table names, not input
                return f"table {table} is not empty"
    except sqlite3.Error as exc:
        return f"not a Synapse database: {exc}"
    finally:
        conn.close()
    return None


def discard(template_dir: Path) -> None:
    """Remove a template without ever leaving a half-deleted one where a reader would look."""
    if not template_dir.exists():
        return
    doomed = template_dir.with_name(f".discard-{template_dir.name}-{os.getpid()}")
    with contextlib.suppress(OSError):
        os.rename(template_dir, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def install(template_dir: Path, key: str, dest_db: Path) -> str | None:
    """Copy the template into place as a new server's database. None on success, else why it was not used
    (a template that fails a check is discarded, so the next cold boot builds a good one)."""
    meta_path = template_dir / META_NAME
    db = template_dir / DB_NAME
    if not meta_path.exists() or not db.exists():
        return "no template yet"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        expected = (meta.get("key"), meta.get("sha256"))
    except (OSError, ValueError, AttributeError) as exc:
        discard(template_dir)
        return f"unreadable template metadata ({exc}); discarded"
    if expected[0] != key:
        discard(template_dir)
        return "template metadata names another key; discarded"
    dest_db.parent.mkdir(parents=True, exist_ok=True)
    partial = dest_db.with_name(dest_db.name + ".partial")
    try:
        shutil.copyfile(db, partial)
        # The copy is what Synapse will open, so the copy is what gets checked.
        problem = "checksum mismatch" if file_sha256(partial) != expected[1] else pristine_problem(partial)
        if problem is None:
            os.replace(partial, dest_db)
            _touch(template_dir)
            return None
    except OSError as exc:
        problem = f"could not copy: {exc}"
    with contextlib.suppress(OSError):
        partial.unlink()
    discard(template_dir)
    return f"template failed its check ({problem}); discarded"


def publish(fresh_db: Path, template_dir: Path, key: str) -> str | None:
    """Keep a copy of a just-created, still untouched database as the template for `key`. None on success.

    Called in the Synapse process between schema creation and the server's start, so the copy has the schema
    and nothing else; it is checked like any template before it is published.
    """
    if template_dir.exists():
        return None  # another run got there first
    root = template_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        copy = building / DB_NAME
        # The backup API gives a consistent single file whatever journal mode the source is in.
        with contextlib.closing(sqlite3.connect(fresh_db)) as src, contextlib.closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)
        with contextlib.closing(sqlite3.connect(copy)) as conn:
            # A rollback journal, not WAL: the template is one self-contained file that copies as it is.
            conn.execute("PRAGMA journal_mode=DELETE")
        problem = pristine_problem(copy)
        if problem is not None:
            return f"the new database is not pristine ({problem})"
        meta = {"key": key, "sha256": file_sha256(copy), "format": FORMAT}
        (building / META_NAME).write_text(json.dumps(meta), encoding="utf-8")
        try:
            os.rename(building, template_dir)
        except OSError:
            return None  # lost the race to another run's identical template
        prune(root)
        return None
    except (OSError, sqlite3.Error) as exc:
        return f"could not keep a template: {exc}"
    finally:
        shutil.rmtree(building, ignore_errors=True)


def prune(root: Path, keep: int = KEEP_TEMPLATES) -> None:
    """Old Synapse versions' templates are never used again; keep only the most recently used few."""
    try:
        entries = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return
    entries.sort(key=lambda p: _mtime(p), reverse=True)
    for stale in entries[keep:]:
        discard(stale)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
