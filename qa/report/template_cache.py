"""The report templates compiled once per machine, not once per run: a Jinja bytecode cache for qa.report.markdown's and
qa.report.html's environments.

Why: every `matrix-qa run` (and `matrix-qa report`) is a new process, and compiling report.md.j2 and report.html.j2
(lex, parse, generate Python, compile it) cost it ~0.2 CPU-s, at the very end of the run, where it adds to the wall
too (closing13's "Jinja per run"). Jinja's own FileSystemBytecodeCache keeps each compiled template's code object in
its per-user directory (`<tmp>/_jinja2-cache-<uid>`, mode 0700, refused when another user owns it) and checks the
template's source (a SHA-1 of it) and Jinja's bytecode version before it reuses one; it writes through a temporary file
and a rename, so runs side by side never read half a file.

What Jinja does not check, and this does: its own release and the environment's compile-time options (delimiters,
whitespace control, autoescaping, optimisation). They are in each entry's key (`flavor`), so a template compiled
under other options (another Jinja, a later version of this code, a test's environment) is never served. Any failure
to read or write the cache is no error: the template is compiled as before.
"""

from __future__ import annotations

import contextlib
from hashlib import sha1
from typing import Any

import jinja2
from jinja2 import Environment
from jinja2.bccache import Bucket, FileSystemBytecodeCache

PATTERN = "matrix-qa-%s.cache"


class TemplateCache(FileSystemBytecodeCache):
    """FileSystemBytecodeCache whose keys carry the environment's compile-time options and whose failures are
    silent (a compile instead)."""

    def __init__(self, flavor: str, directory: str | None = None) -> None:
        super().__init__(directory, PATTERN)  # None: Jinja's checked per-user directory under the temp dir
        self.flavor = flavor

    def get_cache_key(self, name: str, filename: str | None = None) -> str:
        return sha1(f"{self.flavor}|{name}|{filename}".encode()).hexdigest()

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # a damaged or foreign entry (pickle, marshal): compiled instead
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        with contextlib.suppress(OSError):  # a full or read-only disk: the next run compiles again
            super().dump_bytecode(bucket)


def flavor(env: Environment, template: str) -> str:
    """Pure: the options that shape the code `env` compiles `template` to."""
    options: list[Any] = [
        jinja2.__version__,  # Jinja's own check is its bytecode format and Python's version, not its release
        env.block_start_string, env.block_end_string, env.variable_start_string, env.variable_end_string,
        env.comment_start_string, env.comment_end_string, env.line_statement_prefix, env.line_comment_prefix,
        env.trim_blocks, env.lstrip_blocks, env.newline_sequence, env.keep_trailing_newline, env.optimized,
        env.is_async, env.finalize is not None, sorted(env.extensions), bool(env.autoescape(template))
        if callable(env.autoescape) else bool(env.autoescape),
    ]
    return repr(options)


def use_cache(env: Environment, template: str) -> Environment:
    """`env` with a bytecode cache for `template`, when this machine gives a safe directory for one; else as it was."""
    # No usable temp dir, or one another user owns (RuntimeError): compiled every run, as before.
    with contextlib.suppress(OSError, RuntimeError):
        env.bytecode_cache = TemplateCache(flavor(env, template))
    return env
