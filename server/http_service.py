"""What every `echo-server` process shares: its listener (TLS or not), page routes, keys and metrics."""

from __future__ import annotations

import hmac
import secrets
import ssl
from pathlib import Path

from aiohttp import web

from .auth import ApiKeys, TokenSigner
from .config import ServiceConfig, check_exposure
from .limits import SocketLimits
from .metrics import CONTENT_TYPE, Metrics
from .resources import web_dir


class HttpService:
    """A listening aiohttp app with the config's keys, token signer and metrics."""

    def __init__(self, config: ServiceConfig, metrics: Metrics) -> None:
        check_exposure(config.server)  # an exposed address with published secrets or no TLS: refuse
        self.config = config
        self.keys = ApiKeys(config.server.api_keys)
        secret = config.server.token_secret or secrets.token_urlsafe(32)
        self.signer = TokenSigner(secret.encode(), config.server.token_ttl_s, key_known=self.keys.known)
        self.metrics = metrics
        self.port = config.server.port
        self.body_timeout_s = config.server.body_timeout_s
        self.socket_limits = SocketLimits(
            config.server.max_connections_per_address, config.server.max_unauthenticated
        )
        self._runner: web.AppRunner | None = None

    async def listen(self, app: web.Application) -> None:
        """Serve `app` on the configured host and port (the real port is in `self.port`)."""
        # aiohttp arms its keep-alive timer when a connection opens and closes the connection if
        # no whole request arrived by then: that is the header timeout (slowloris), and the idle
        # limit between requests
        self._runner = web.AppRunner(
            app, access_log=None, keepalive_timeout=self.config.server.header_timeout_s
        )
        await self._runner.setup()
        tls = None
        if self.config.server.tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.config.server.tls_cert, self.config.server.tls_key)
        site = web.TCPSite(self._runner, self.config.server.host, self.config.server.port, ssl_context=tls)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])

    async def close_listener(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        scheme = "https" if self.config.server.tls_cert else "http"
        return f"{scheme}://{self.config.server.host}:{self.port}"

    @property
    def static_dir(self) -> Path:
        return Path(self.config.server.static_dir) if self.config.server.static_dir else web_dir()

    def add_page_routes(self, app: web.Application) -> None:
        """The browser page at `/` and its files under `/static/`, when the page is installed."""
        if self.static_dir.is_dir():
            app.router.add_get("/", self.index)
            app.router.add_static("/static/", self.static_dir, show_index=False)

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(self.static_dir / "index.html")

    def metrics_allowed(self, request: web.Request) -> bool:
        """Whether `request` may read /metrics (`server.metrics_token`, when set, as a bearer)."""
        expected = self.config.server.metrics_token
        if expected is None:
            return True
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), expected.encode())

    def count_error(self, code: str) -> None:
        """Count one `error` answered with `code` (exported as echo_errors_total)."""
        self.metrics.count_error(code)

    def metrics_response(self, request: web.Request) -> web.Response:
        """The metrics as a scrape (401 without the metrics token, when one is set)."""
        if not self.metrics_allowed(request):
            raise web.HTTPUnauthorized(text="/metrics needs the metrics token")
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
