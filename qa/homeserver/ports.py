"""Free loopback ports for what the harness serves beside a homeserver (the homeserver itself, the
application-service endpoint, a service bot's listener)."""

from __future__ import annotations

import socket


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port(avoid: set[int]) -> int:
    """A free loopback port, none of `avoid` (and added to it): the homeserver's port is free too until it boots,
    and a bot's until it listens, so the kernel may offer either again."""
    while True:
        port = find_free_port()
        if port not in avoid:
            avoid.add(port)
            return port
