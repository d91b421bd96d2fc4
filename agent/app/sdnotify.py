"""systemd's notify protocol (sd_notify(3)): READY, WATCHDOG, STATUS, STOPPING, without libsystemd.

A datagram to the socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace). Outside systemd the variable is unset and every call is a no-op, so the daemon runs the
same from a shell, in tests and under ``Type=notify``.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends notify messages to systemd; does nothing when not started by systemd."""

    def __init__(self, address: str | None = None) -> None:
        """``address`` defaults to ``$NOTIFY_SOCKET``."""
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self._sock: socket.socket | None = None
        if self._address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (e.g. ``READY=1``); False when not under systemd or it failed."""
        if self._sock is None or self._address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:  # systemd gone or socket full: never fatal for the gate
            log.warning("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(ready=1, status=status, mainpid=os.getpid())

    def watchdog(self) -> bool:
        return self.send(watchdog=1)

    def status(self, status: str) -> bool:
        return self.send(status=status)

    def stopping(self) -> bool:
        return self.send(stopping=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds (the recommended ping period), None when unset."""
    value = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID")
    if not value.isdigit() or int(value) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(value) / 2e6
