"""A free TCP port for the servers tests start (hub, gate status, PostgreSQL, pretix, pages)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (and is closed now: nothing listens)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
