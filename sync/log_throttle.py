"""Log lines a client can provoke, kept few and clean: the hub's and the gate's status server's.

:class:`Throttle` lets one line per client and reason through a minute, and a budget of lines in
all, counting what it held back; :class:`RequestErrors` (installed by :func:`request_log` on the
logger of aiohttp's request handler) turns a request aiohttp could not read into one such line,
never the exception's text (aiohttp quotes the offending header, a token in it included).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Hashable

WARN_EVERY_S = 60.0
_MAX_KEYS = 4096  # distinct (client, reason) pairs remembered; a flood cannot grow it further
LOG_BUDGET = 20  # lines a Throttle writes each WARN_EVERY_S, whatever the clients


def client_net(host: str) -> str:
    """The client a refusal is counted for: an IPv4 address itself (an IPv4-mapped IPv6 one
    too), an IPv6 address its /64 (one host's SLAAC addresses; a client could rotate through
    2**64 of them); anything else as given."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Throttle:
    """At most one log line per key (a client, a reason) every :data:`WARN_EVERY_S`, and at
    most :data:`LOG_BUDGET` lines in all each :data:`WARN_EVERY_S`, so that whoever can reach the
    hub cannot flood its log, from one address or from many (key clients by
    :func:`client_net`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[Hashable, tuple[float, int]] = {}
        self._window = -WARN_EVERY_S  # when the budget's current minute began
        self._written = 0  # lines written in it
        self._over = 0  # lines held back by the budget since the last line written

    def due(self, key: Hashable) -> str | None:
        """None: no line now (counted); else write one now, ending with what this says of the
        lines held back since the last ("" when none were)."""
        now = self._clock()
        last, held = self._last.get(key, (-WARN_EVERY_S, 0))
        if now - last < WARN_EVERY_S:
            self._last[key] = (last, held + 1)
            return None
        if now - self._window >= WARN_EVERY_S:
            self._window, self._written = now, 0
        if self._written >= LOG_BUDGET:
            self._over += 1
            return None
        self._written += 1
        if len(self._last) >= _MAX_KEYS:
            self._last.clear()
        self._last[key] = (now, 0)
        notes = [f"{held} more since the last such line"] if held else []
        if self._over:
            notes.append(f"{self._over} more held back by the log budget")
            self._over = 0
        if self._written == LOG_BUDGET:
            notes.append(f"log budget of {LOG_BUDGET} such lines a minute reached: more held back")
        return f" ({'; '.join(notes)})" if notes else ""


class RequestErrors(logging.Filter):
    """For the logger aiohttp's request handler writes to (``web.AppRunner(logger=...)``): a
    request it could not read (a head past 8 kB, a malformed line, a body it could not take) is
    one WARNING naming the client and the kind of error, at most one per client a minute and
    :data:`LOG_BUDGET` in all (:class:`Throttle`), never the exception's text or traceback:
    aiohttp quotes the offending line, e.g. an over-long ``Authorization: Bearer <token> xxx...``
    header sent by anyone, with no token needed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._throttle = Throttle(clock)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        # aiohttp names the client by its address, None once the client has gone (a display
        # that reset its connection), and not at all for an error in a handler.
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        client = "a client already gone" if remote is None else str(remote)
        code = getattr(exc, "code", None)
        what = type(exc).__name__ + (f" {code}" if isinstance(code, int) else "")
        if (more := self._throttle.due((client_net(client), what))) is None:
            return False
        record.msg, record.args = "request from %s not handled: %s%s", (client, what, more)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def request_log(name: str) -> logging.Logger:
    """The logger named ``name`` for aiohttp's request handler (``web.AppRunner(logger=...)``),
    its lines scrubbed and throttled by :class:`RequestErrors` (the hub's, the gate's status
    server's)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RequestErrors) for f in logger.filters):
        logger.addFilter(RequestErrors())
    return logger
