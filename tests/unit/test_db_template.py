"""The pristine Synapse database template: keyed by what shapes the schema, trusted only when it checks out."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from qa.homeserver import db_template
from qa.homeserver.db_template import (
    DB_NAME,
    META_NAME,
    MUST_BE_EMPTY,
    cache_root,
    install,
    pristine_problem,
    prune,
    publish,
    schema_fingerprint,
    template_key,
)
from qa.homeserver.seeded_boot import TEMPLATE_ENV
from qa.homeserver.synapse import SynapseHomeserver

KEY = "k" * 24


def _fake_synapse_db(path: Path, *, wal: bool = False) -> Path:
    """Enough of Synapse's schema for the checks: a schema version and the tables that must be empty."""
    with sqlite3.connect(path) as conn:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE schema_version (version INTEGER)")
        conn.execute("INSERT INTO schema_version VALUES (94)")
        for table in MUST_BE_EMPTY:
            conn.execute(f"CREATE TABLE {table} (name TEXT)")
    return path


def _published(tmp_path: Path, **kwargs: bool) -> Path:
    fresh = _fake_synapse_db(tmp_path / "fresh.db", **kwargs)
    template = tmp_path / "cache" / KEY
    assert publish(fresh, template, KEY) is None
    return template


def test_a_published_template_installs_as_an_identical_database(tmp_path: Path) -> None:
    template = _published(tmp_path, wal=True)
    dest = tmp_path / "server" / "homeserver.db"
    assert install(template, KEY, dest) is None
    assert dest.read_bytes() == (template / DB_NAME).read_bytes()
    with sqlite3.connect(dest) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (94,)
    assert not dest.with_name("homeserver.db.partial").exists()


def test_no_template_yet_leaves_the_server_to_create_its_schema(tmp_path: Path) -> None:
    dest = tmp_path / "homeserver.db"
    assert install(tmp_path / "cache" / KEY, KEY, dest) == "no template yet"
    assert not dest.exists()


def test_a_template_holding_a_user_is_discarded_not_used(tmp_path: Path) -> None:
    template = _published(tmp_path)
    db = template / DB_NAME
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO users VALUES ('@left-over:localhost')")
    _rewrite_checksum(template)  # a consistent but non-pristine template: only the content check can tell
    dest = tmp_path / "homeserver.db"
    note = install(template, KEY, dest)
    assert note is not None and "users is not empty" in note
    assert not dest.exists()
    assert not template.exists()


def test_each_must_be_empty_table_is_checked(tmp_path: Path) -> None:
    for table in MUST_BE_EMPTY:
        db = _fake_synapse_db(tmp_path / f"{table}.db")
        with sqlite3.connect(db) as conn:
            conn.execute(f"INSERT INTO {table} VALUES ('x')")
        assert pristine_problem(db) == f"table {table} is not empty"
    assert pristine_problem(_fake_synapse_db(tmp_path / "clean.db")) is None


def test_a_damaged_template_fails_its_checksum_and_is_discarded(tmp_path: Path) -> None:
    template = _published(tmp_path)
    db = template / DB_NAME
    data = bytearray(db.read_bytes())
    data[len(data) // 2] ^= 0xFF
    db.write_bytes(bytes(data))
    note = install(template, KEY, tmp_path / "homeserver.db")
    assert note is not None and "checksum mismatch" in note
    assert not (tmp_path / "homeserver.db").exists()
    assert not template.exists()


def test_a_template_for_another_key_is_never_used(tmp_path: Path) -> None:
    template = _published(tmp_path)
    note = install(template, "another-key", tmp_path / "homeserver.db")
    assert note is not None and "another key" in note
    assert not (tmp_path / "homeserver.db").exists()


def test_unreadable_metadata_is_discarded(tmp_path: Path) -> None:
    template = _published(tmp_path)
    (template / META_NAME).write_text("{not json")
    note = install(template, KEY, tmp_path / "homeserver.db")
    assert note is not None and "unreadable" in note
    assert not template.exists()


def test_a_garbage_file_is_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    assert pristine_problem(junk) is not None
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert pristine_problem(empty) is not None  # no schema_version: Synapse never finished creating it


def test_publish_refuses_a_database_that_already_holds_state(tmp_path: Path) -> None:
    fresh = _fake_synapse_db(tmp_path / "fresh.db")
    with sqlite3.connect(fresh) as conn:
        conn.execute("INSERT INTO rooms VALUES ('!r:localhost')")
    template = tmp_path / "cache" / KEY
    problem = publish(fresh, template, KEY)
    assert problem is not None and "rooms is not empty" in problem
    assert not template.exists()
    assert list((tmp_path / "cache").iterdir()) == []  # the build directory is gone too


def test_publish_keeps_the_first_template_when_two_runs_race(tmp_path: Path) -> None:
    template = _published(tmp_path)
    first = (template / META_NAME).read_text()
    other = _fake_synapse_db(tmp_path / "other.db")
    assert publish(other, template, KEY) is None
    assert (template / META_NAME).read_text() == first


def test_the_key_changes_with_everything_that_shapes_the_schema() -> None:
    base = {"synapse_version": "1.163.2", "schema": "abc", "server_name": "localhost"}
    keys = {template_key(**base)}
    for field, value in [("synapse_version", "1.164.0"), ("schema", "abd"), ("server_name", "example.org")]:
        keys.add(template_key(**{**base, field: value}))
    keys.add(template_key(**base, engine="psycopg2"))
    assert len(keys) == 5
    assert template_key(**base) == template_key(**base)


def test_schema_fingerprint_sees_a_new_delta_file(tmp_path: Path) -> None:
    schema = tmp_path / "storage" / "schema" / "main" / "delta" / "94"
    schema.mkdir(parents=True)
    (schema / "01_a.sql").write_text("CREATE TABLE a (x INT);")
    before = schema_fingerprint(tmp_path)
    assert schema_fingerprint(tmp_path) == before
    (schema / "02_b.sql").write_text("CREATE TABLE b (x INT);")
    assert schema_fingerprint(tmp_path) != before


def test_installed_synapse_has_a_key() -> None:
    key = db_template.installed_synapse_key("localhost")
    assert key is not None and key == db_template.installed_synapse_key("localhost")
    assert key != db_template.installed_synapse_key("example.org")


def test_cache_root_follows_xdg(tmp_path: Path) -> None:
    assert cache_root({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "matrix-qa" / "synapse-db"
    assert cache_root({"HOME": str(tmp_path)}) == tmp_path / ".cache" / "matrix-qa" / "synapse-db"


def test_prune_keeps_the_most_recently_used(tmp_path: Path) -> None:
    import os

    for i in range(5):
        (tmp_path / f"t{i}").mkdir()
        os.utime(tmp_path / f"t{i}", (1000 + i, 1000 + i))
    prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t3", "t4"]


def test_fresh_server_without_template_boots_through_seeded_boot(tmp_path: Path) -> None:
    hs = SynapseHomeserver(tmp_path / "w", tmp_path / "l", port=18008, template_dir=tmp_path / "cache")
    hs._prepare()
    assert hs.template_note == "no template yet"
    argv, env = hs._launch_command()
    assert argv[1:3] == ["-m", "qa.homeserver.seeded_boot"]
    # Process listings (cleanup checks, benchmarks) still find Synapse by its app module.
    assert "synapse.app.homeserver" in argv and argv[-2:] == ["-c", str(hs.config_path)]
    assert env is not None
    request = json.loads(env[TEMPLATE_ENV])
    assert request["key"] == db_template.installed_synapse_key("localhost")
    assert request["db"] == str(tmp_path / "w" / "homeserver.db")
    assert request["dir"] == str(tmp_path / "cache" / request["key"])


def test_server_with_a_database_boots_without_a_template_request(tmp_path: Path) -> None:
    key = db_template.installed_synapse_key("localhost")
    assert key is not None
    fresh = _fake_synapse_db(tmp_path / "fresh.db")
    assert publish(fresh, tmp_path / "cache" / key, key) is None
    hs = SynapseHomeserver(tmp_path / "w", tmp_path / "l", port=18008, template_dir=tmp_path / "cache")
    hs._prepare()
    assert hs.template_note is None
    assert (tmp_path / "w" / "homeserver.db").read_bytes() == (tmp_path / "cache" / key / DB_NAME).read_bytes()
    argv, env = hs._launch_command()
    # Through seeded_boot still (it remembers jsonschema's schema checks), but nothing to seed.
    assert argv[1:4] == ["-m", "qa.homeserver.seeded_boot", "synapse.app.homeserver"] and env is None


def test_templates_can_be_turned_off(tmp_path: Path) -> None:
    hs = SynapseHomeserver(tmp_path / "w", tmp_path / "l", port=18008, template_dir=None)
    hs._prepare()
    argv, env = hs._launch_command()
    assert argv[1:4] == ["-m", "qa.homeserver.seeded_boot", "synapse.app.homeserver"] and env is None
    assert not (tmp_path / "w" / "homeserver.db").exists()


def _rewrite_checksum(template: Path) -> None:
    meta = json.loads((template / META_NAME).read_text())
    meta["sha256"] = db_template.file_sha256(template / DB_NAME)
    (template / META_NAME).write_text(json.dumps(meta))
