"""Ticket format registry: turns scanned text into a parsed (not yet verified) Ticket.

Formats are registered as values whose parser is a ``"module:function"`` string, imported only on
the first text of that format, so ``import agent.tickets`` stays cheap. A format is chosen by its
prefix (longest match wins) or, for formats without one, by its ``matches`` shape test, tried in
registration order after the prefixes. A hard length cap is applied before any format sees the text.

Every failure, including a bug inside a parser, leaves :func:`parse` as TicketFormatError, so the
lane can always turn it into an ``invalid_format`` decision.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from agent.errors import TicketFormatError
from agent.model import Ticket
from agent.redact import text_digest

__all__ = ["MAX_TEXT_LEN", "Format", "formats", "parse", "recognised", "register"]

log = logging.getLogger(__name__)

MAX_TEXT_LEN = 4096
# A rotating ticket's static part (agent.tickets.tk2), as issued to its holder's app: not a ticket
# a gate admits (that is the code the app shows), but a text a holder may show by mistake.
STATIC_PART_PREFIX = "TK2S:"

Parser = Callable[[str], Ticket]


@dataclass(frozen=True)
class Format:
    """A ticket format: how to recognise its text and which function parses it.

    ``prefix`` selects the format when the text starts with it; ``matches`` is a shape test for
    formats without a prefix. ``parser`` is ``"package.module:function"``, taking the text and
    returning a Ticket or raising TicketFormatError. Raises ValueError when malformed.
    """

    name: str
    prefix: str | None
    matches: Callable[[str], bool] | None
    parser: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("format name must not be empty")
        if not self.prefix and self.matches is None:
            raise ValueError(f"format {self.name!r} needs a non-empty prefix or a matches test")
        module, sep, func = self.parser.partition(":")
        if not (module and sep and func):
            raise ValueError(f"format {self.name!r}: parser must be 'module:function'")


_formats: list[Format] = []
_parsers: dict[str, Parser] = {}


def register(fmt: Format) -> None:
    """Add ``fmt`` to the registry; registering an equal format again is a no-op.

    Raises ValueError when another format already uses the same name or prefix.
    """
    for known in _formats:
        if known == fmt:
            return
        if known.name == fmt.name:
            raise ValueError(f"ticket format {fmt.name!r} is already registered")
        if fmt.prefix and known.prefix == fmt.prefix:
            raise ValueError(f"prefix {fmt.prefix!r} is already used by format {known.name!r}")
    _formats.append(fmt)
    _parsers.pop(fmt.name, None)


def formats() -> list[Format]:
    """The registered formats, in registration order (a copy)."""
    return list(_formats)


def parse(text: str) -> Ticket:
    """Parse scanned ``text`` with the format it belongs to.

    Raises TicketFormatError when the text is over MAX_TEXT_LEN (checked first), empty, of no
    registered format ("unrecognised ticket format"), or refused by its format's parser.
    """
    if len(text) > MAX_TEXT_LEN:
        raise TicketFormatError(f"text of {len(text)} characters exceeds the {MAX_TEXT_LEN} cap")
    if not text:
        raise TicketFormatError("empty text")
    fmt = _select(text)
    if fmt is None:
        if text.startswith(STATIC_PART_PREFIX):  # the holder showed the ticket, not its code
            raise TicketFormatError(
                "a rotating ticket's static part (TK2S:), not a code: the holder shows the code"
                " their ticket app displays"
            )
        raise TicketFormatError("unrecognised ticket format")
    return _run(fmt, text)


def recognised(text: str) -> bool:
    """Whether ``text`` is of a registered ticket format (not whether it parses): a code that
    is not is no ticket at all (a URL printed beside one, say)."""
    return 0 < len(text) <= MAX_TEXT_LEN and _select(text) is not None


def _select(text: str) -> Format | None:
    prefixed = [f for f in _formats if f.prefix and text.startswith(f.prefix)]
    if prefixed:
        return max(prefixed, key=lambda f: len(f.prefix or ""))
    for fmt in _formats:
        if fmt.prefix or fmt.matches is None:
            continue
        try:
            if fmt.matches(text):
                return fmt
        except Exception:
            # A shape test that crashes is a bug; treat it as "not this format" and say so.
            log.exception("format %s: matches() failed on text %s", fmt.name, text_digest(text))
    return None


def _run(fmt: Format, text: str) -> Ticket:
    try:
        ticket = _parser(fmt)(text)
    except TicketFormatError:
        raise
    except Exception as exc:
        # A parser must only raise TicketFormatError; anything else is a bug, but the scan path
        # still needs a value, so it becomes invalid_format and the traceback goes to the log.
        log.exception("format %s: parser failed on text %s", fmt.name, text_digest(text))
        raise TicketFormatError(
            f"{fmt.name}: internal parser error ({type(exc).__name__})"
        ) from exc
    if not isinstance(ticket, Ticket):
        log.error("format %s: parser returned %s, not a Ticket", fmt.name, type(ticket).__name__)
        raise TicketFormatError(f"{fmt.name}: internal parser error (no ticket)")
    return ticket


def _parser(fmt: Format) -> Parser:
    parser = _parsers.get(fmt.name)
    if parser is None:
        module_name, _, func_name = fmt.parser.partition(":")
        found = getattr(importlib.import_module(module_name), func_name)
        if not callable(found):
            raise TypeError(f"{fmt.parser} is not callable")
        parser = _parsers[fmt.name] = found
    return parser


# pretix_sig1 has no prefix: reversed base64 of at least a header and a signature (92 characters),
# capped where its parser caps it. Kept here so the shape test does not import the parser.
_PRETIX_SIG1_SHAPE = re.compile(r"[A-Za-z0-9+/=]{92,1024}")


def _pretix_sig1_shape(text: str) -> bool:
    return _PRETIX_SIG1_SHAPE.fullmatch(text) is not None


register(Format(name="tk1", prefix="TK1:", matches=None, parser="agent.tickets.tk1:parse"))
register(Format(name="tk2", prefix="TK2:", matches=None, parser="agent.tickets.tk2:parse"))
register(
    Format(
        name="pretix_sig1",
        prefix=None,
        matches=_pretix_sig1_shape,
        parser="agent.tickets.pretix_sig1:parse",
    )
)
