"""One TLS context per process for the model client, built the way the SDK's HTTP library builds its own.

The SDK builds a fresh context for every client, loading the CA bundle each time: ~26 ms of CPU per bot, spent
even for a plain-http mock. The fork server builds this one before it forks (bot.yaml's fork_server preload), so
a forked bot pays nothing; a bot started the ordinary way pays once, as before. The certificate variables the library
honours (SSL_CERT_FILE, SSL_CERT_DIR) are part of the key, so a bot whose environment names others gets its own.
"""

from __future__ import annotations

import functools
import importlib
import os
import ssl
import sys
from types import ModuleType


def shared_tls_context() -> ssl.SSLContext | None:
    """None when the SDK's HTTP library offers no public way to build its context: the SDK then builds its own."""
    return _context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def sdk_http_library() -> ModuleType:
    """The HTTP library the openai SDK itself imported: httpx2 in recent releases, httpx before (pyproject allows
    both). Call after importing openai."""
    return importlib.import_module("httpx2" if "httpx2" in sys.modules else "httpx")


@functools.cache
def _context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext | None:
    make = getattr(sdk_http_library(), "create_ssl_context", None)
    return make() if make is not None else None
