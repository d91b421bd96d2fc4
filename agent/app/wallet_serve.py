"""`gate-agent wallet serve`: the holder's wallet page on 127.0.0.1 without the hub.

The same files the hub serves under ``/wallet`` (:mod:`sync.hub_wallet`), without the issuing
endpoint: the page's device key is certified with `gate-agent issue --device-key` (the page shows
and downloads its public key as PEM) and the issued ``TK2S:`` text is pasted into it. WebCrypto
needs a secure context, and ``http://127.0.0.1`` / ``http://localhost`` is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiohttp import web

from sync import hub_wallet

HOST = "127.0.0.1"
DEFAULT_PORT = 8472  # the hub is 8470, a gate's status server 8471


def make_app() -> web.Application:
    """The wallet page's application: ``GET /`` redirects to ``/wallet``."""
    app = web.Application(client_max_size=1024)

    async def root(request: web.Request) -> web.Response:
        raise web.HTTPFound("/wallet")

    app.router.add_get("/", root)
    hub_wallet.add_page_routes(app)
    return app


async def serve(port: int, ready: asyncio.Event | None = None) -> int:
    """Serve until SIGINT or SIGTERM; prints the page's URL once listening."""
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        print(f"wallet page on http://{HOST}:{bound}/wallet (Ctrl-C stops)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0
