"""A headless Chromium for tests, driven over the DevTools protocol (no node, no Playwright).

One :class:`Browser` is one Chromium process with one page::

    async with Browser(tmp_path) as page:
        await page.goto(url)
        await page.wait_for("document.querySelector('#state').innerText === 'open'")
        assert page.console_errors == []

Failures a test should report as its own failure (a JS exception, a condition that never became true,
a navigation that failed) raise :class:`AssertionError`; a browser that cannot start or dies raises
:class:`BrowserError`. Chromium's stderr goes to ``log_path`` and its tail is part of every
:class:`BrowserError`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tests.polling import until

LAUNCH_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 30.0
POLL_S = 0.05
_MAX_MESSAGE = 64 * 1024 * 1024  # a full-page screenshot of a large window, base64
_LOG_TAIL = 2000

# No internet here: without these flags chromium keeps trying (and logging) refused connections.
_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--remote-debugging-port=0",
)


# What chromium answers an evaluation made while the page is replaced by another (failed once in
# CI: a wait for the reloaded console asked as the old page went).
_NAVIGATING = ("Inspected target navigated or closed", "Execution context was destroyed")


class BrowserError(RuntimeError):
    """Chromium could not be found or started, or stopped answering."""


def chromium_path() -> str:
    """Return the Chromium binary: $CHROMIUM, /usr/bin/chromium, chromium or chromium-browser on PATH.

    Raises BrowserError when none is found (or $CHROMIUM names no executable): the browser tests
    must fail, not skip, where chromium is missing.
    """
    hint = "install it with `bash .ci/setup --tests` (or set CHROMIUM to the binary)"
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise BrowserError(f"CHROMIUM={explicit!r} is not an executable; {hint}")
        return found
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found is not None:
            return found
    raise BrowserError(f"chromium not found; {hint}")


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def _read_port(profile: Path) -> int | None:
    """The DevTools port chromium writes to its profile, or None while the file is incomplete."""
    try:
        lines = (profile / "DevToolsActivePort").read_text().splitlines()
    except FileNotFoundError:
        return None
    return int(lines[0]) if len(lines) >= 2 and lines[0].isdigit() else None


def _log_tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return "(no chromium log)"
    return data[-_LOG_TAIL:].decode("utf-8", "replace")


def _exception_text(details: dict[str, Any]) -> str:
    """The message of a Runtime.ExceptionDetails: the thrown value's description, else the text."""
    exc = details.get("exception") or {}
    text = exc.get("description") or exc.get("value") or details.get("text") or "exception"
    return str(text)


def _console_text(args: list[dict[str, Any]]) -> str:
    return " ".join(str(a.get("value", a.get("description", ""))) for a in args)


class Browser:
    """One headless Chromium process with one page, as an async context manager."""

    def __init__(self, tmp_dir: Path, *, width: int = 800, height: int = 480) -> None:
        self.tmp_dir = tmp_dir
        self.width = width
        self.height = height
        self.console_errors: list[str] = []
        self.log_path = tmp_dir / "chromium.log"
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._loaded: set[str] = set()  # loaderIds whose "load" lifecycle event was seen
        self._load_seen = asyncio.Event()

    async def __aenter__(self) -> Browser:
        """Launch chromium and connect to its page; raises BrowserError when it does not come up."""
        try:
            deadline = time.monotonic() + LAUNCH_TIMEOUT_S
            port = await self._launch(deadline)
            self._session = aiohttp.ClientSession()
            ws_url = await self._page_ws_url(port, deadline)
            self._ws = await self._session.ws_connect(ws_url, max_msg_size=_MAX_MESSAGE)
            self._reader = asyncio.create_task(self._read_loop())
            for method in ("Page.enable", "Runtime.enable", "Log.enable"):
                await self._call(method)
            await self._call("Page.setLifecycleEventsEnabled", {"enabled": True})
            # The window size includes the (invisible) browser UI; the page gets exactly W x H.
            metrics = {"width": self.width, "height": self.height}
            await self._call(
                "Emulation.setDeviceMetricsOverride",
                {**metrics, "deviceScaleFactor": 1, "mobile": False},
            )
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _launch(self, deadline: float) -> int:
        binary = chromium_path()
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=self.tmp_dir))
        self.log_path = profile / "chromium.log"
        args = [
            *_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        log_fd = _open_log(self.log_path)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                binary,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,  # its own process group: close() ends renderers too
            )
        finally:
            os.close(log_fd)
        proc = self._proc
        try:
            await until(
                lambda: proc.returncode is not None or _read_port(profile) is not None,
                max(deadline - time.monotonic(), 0.0),
                "chromium opens DevTools",
            )
        except AssertionError:
            raise self._error(
                f"chromium did not open DevTools in {LAUNCH_TIMEOUT_S:.0f} s"
            ) from None
        port = _read_port(profile)
        if port is None:
            raise self._error(f"chromium exited with {proc.returncode} at start")
        return port

    async def _page_ws_url(self, port: int, deadline: float) -> str:
        """The page target's websocket URL from http://127.0.0.1:port/json."""
        assert self._session is not None
        session = self._session
        url = f"http://127.0.0.1:{port}/json"
        found: list[str] = []
        last = ""

        async def page_target() -> bool:
            nonlocal last
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    targets = await r.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                targets, last = [], repr(e)
            else:
                last = f"no page target in {targets!r}"[:500]
            found.extend(
                str(t["webSocketDebuggerUrl"])
                for t in targets
                if t.get("type") == "page" and "webSocketDebuggerUrl" in t
            )
            return bool(found)

        try:
            await until(page_target, max(deadline - time.monotonic(), 0.0), "a DevTools page")
        except AssertionError:
            raise self._error(f"no DevTools page target at {url}: {last}") from None
        return found[0]

    async def close(self) -> None:
        """Close the connection and end chromium's process group (SIGTERM, then SIGKILL).

        Idempotent; safe to call on a browser that never started.
        """
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._fail_pending(BrowserError("browser closed"))
        if self._proc is not None:
            await _end_group(self._proc)
            self._proc = None

    @property
    def pid(self) -> int | None:
        """Chromium's process id (its process group id too) while it runs."""
        return None if self._proc is None else self._proc.pid

    async def goto(self, url: str) -> None:
        """Navigate the page to ``url`` and wait for its load event.

        Raises AssertionError when the navigation fails (refused connection, bad URL) or the page
        does not finish loading within the call timeout.
        """
        result = await self._call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise AssertionError(f"navigation to {url} failed: {result['errorText']}")
        loader = result.get("loaderId")
        if loader is None:  # same-document navigation (a #fragment): no load event follows
            return
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                while loader not in self._loaded:
                    self._load_seen.clear()
                    await self._load_seen.wait()
        except TimeoutError:
            raise AssertionError(
                f"{url} did not finish loading in {CALL_TIMEOUT_S:.0f} s"
            ) from None

    async def evaluate(self, expression: str) -> Any:
        """Evaluate a JS expression in the page, await a returned promise, return its JSON value.

        ``undefined`` comes back as None; DOM nodes as {}. Raises AssertionError with the exception's
        text when the expression throws or its promise rejects; BrowserError on a protocol error;
        TimeoutError when chromium does not answer within 30 s.
        """
        return await self._evaluate(expression, CALL_TIMEOUT_S)

    async def _evaluate(self, expression: str, limit_s: float) -> Any:
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = await self._call("Runtime.evaluate", params, limit_s=limit_s)
        if "exceptionDetails" in result:
            raise AssertionError(f"JS exception: {_exception_text(result['exceptionDetails'])}")
        return result.get("result", {}).get("value")

    # A deadline parameter, not asyncio.timeout(): the timeout is part of the failure report.
    async def wait_for(self, predicate_js: str, timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """Poll the JS expression ``predicate_js`` (tests/polling.py) until it is truthy; return its value.

        An exception thrown by the predicate counts as "not yet" (the element may not exist yet).
        Raises AssertionError on timeout, with the last exception, the console errors and the
        first 2000 characters of the page's text.
        """
        wrapped = f"(async () => {{ const v = await ({predicate_js}); return [!!v, v]; }})()"
        deadline = time.monotonic() + timeout
        last_error = ""
        values: list[Any] = []

        async def truthy() -> bool:
            nonlocal last_error
            try:
                ok, value = await self._evaluate(wrapped, max(deadline - time.monotonic(), POLL_S))
            except (AssertionError, TimeoutError) as e:
                last_error = str(e) or "evaluation timed out"
                return False
            except BrowserError as e:  # asked while the page navigates (a reload): not yet
                if not any(words in str(e) for words in _NAVIGATING):
                    raise
                last_error = str(e)
                return False
            values.append(value)
            return bool(ok)

        try:
            await until(truthy, timeout, predicate_js)
        except AssertionError:
            raise AssertionError(
                await self._timeout_report(predicate_js, timeout, last_error)
            ) from None
        return values[-1]

    async def _timeout_report(self, predicate_js: str, waited_s: float, last_error: str) -> str:
        try:
            body = await self._evaluate("document.body ? document.body.innerText : ''", 5.0)
        except (AssertionError, TimeoutError) as e:
            body = f"(page text unavailable: {e})"
        lines = [f"timed out after {waited_s} s waiting for: {predicate_js}"]
        if last_error:
            lines.append(f"last error: {last_error}")
        if self.console_errors:
            lines.append(f"console errors: {self.console_errors}")
        lines.append(f"page text: {str(body)[:2000]}")
        return "\n".join(lines)

    async def text(self, selector: str) -> str:
        """The rendered text (innerText) of the first element matching the CSS ``selector``.

        Raises AssertionError when no element matches.
        """
        sel = json.dumps(selector)
        value = await self.evaluate(
            f"(() => {{ const el = document.querySelector({sel});"
            f" if (!el) throw new Error('no element matches ' + {sel}); return el.innerText; }})()"
        )
        return str(value)

    async def screenshot(self, path: Path) -> Path:
        """Capture the visible page as a PNG file at ``path`` and return ``path``."""
        result = await self._call("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(result["data"]))
        return path

    async def _call(
        self, method: str, params: dict[str, Any] | None = None, *, limit_s: float = CALL_TIMEOUT_S
    ) -> dict[str, Any]:
        """Send one DevTools command and return its result; BrowserError on a protocol error."""
        if self._ws is None:
            raise BrowserError(f"{method}: the browser is not running")
        if self._reader is None or self._reader.done():
            raise self._error(f"{method}: chromium closed the DevTools connection")
        self._next_id += 1
        call_id = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            message = {"id": call_id, "method": method, "params": params or {}}
            try:
                await self._ws.send_json(message)
            except (ConnectionError, aiohttp.ClientError) as e:
                raise self._error(f"{method}: cannot reach chromium: {e!r}") from e
            reply = await asyncio.wait_for(future, limit_s)
        finally:
            self._pending.pop(call_id, None)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message', reply['error'])}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                if "id" in data:
                    future = self._pending.get(data["id"])
                    if future is not None and not future.done():
                        future.set_result(data)
                else:
                    self._on_event(data.get("method", ""), data.get("params", {}))
        finally:  # a dead browser fails the calls in flight at once, not at their timeout
            self._fail_pending(self._error("chromium closed the DevTools connection"))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.lifecycleEvent" and params.get("name") == "load":
            self._loaded.add(params.get("loaderId", ""))
            self._load_seen.set()
        elif method == "Runtime.exceptionThrown":
            self.console_errors.append(_exception_text(params.get("exceptionDetails", {})))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.console_errors.append(_console_text(params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            if urlsplit(entry.get("url", "")).path == "/favicon.ico":
                return  # chromium asks for it on its own; a page without one is not at fault
            where = f" ({entry['url']})" if entry.get("url") else ""
            self.console_errors.append(f"{entry.get('text', '')}{where}")
        elif method == "Inspector.targetCrashed":
            self.console_errors.append("the page crashed")

    def _fail_pending(self, error: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    def _error(self, message: str) -> BrowserError:
        return BrowserError(
            f"{message}\n--- {self.log_path} (tail) ---\n{_log_tail(self.log_path)}"
        )


async def _end_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM chromium's process group, SIGKILL it after 5 s, and kill any member left behind."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 5.0)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    # Renderers and the zygote share the group; none may outlive the test.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
