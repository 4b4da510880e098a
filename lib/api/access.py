"""Who may call the server: hosts, origins and an optional access token.

MONAI Label 0.8.5 allows every origin with credentials (``CORS *``), so any web page the annotator opens
can call the server, ``DELETE /datastore`` included. Here, from the app's ``server`` configuration:

- **CORS off by default.** OHIF is served by this server (same origin) and Slicer is no browser, so
  neither needs it; ``server.cors_origins`` lists the origins of other web viewers that may call it.
- **Cross-site writes refused.** A browser sends simple ``POST`` forms cross-site without asking, CORS or
  not; a state-changing request whose ``Origin`` is neither this server nor an allowed origin is a 403.
- **Known host names only** (``server.allowed_hosts``; loopback by default), so a page on another
  domain that resolves to 127.0.0.1 (DNS rebinding) is refused: Starlette's ``TrustedHostMiddleware``.
- **An opt-in access token** (``--conf server.auth_token <token>`` or the environment variable
  ``ONESHOT_AUTH_TOKEN``): then every endpoint but ``/auth/`` needs ``Authorization: Bearer <token>``.
  MONAI Label clients get it as they get a MONAI Label auth token: Slicer's *Auth* fields (any user
  name, the token as password) call ``POST /auth/token``, which answers the token itself.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import OAuth2PasswordRequestForm
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "ONESHOT_AUTH_TOKEN"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS = ("/auth/", "/auth/token", "/favicon.ico")  # answered without the token: how a client gets it

_settings: dict[str, Any] = {}


@dataclass(frozen=True)
class ServerConfig:
    """The HTTP server (configuration ``server``): who may call it, and how much inference it runs at once."""

    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")  # Host names answered (DNS-rebinding guard); "*" = any
    cors_origins: tuple[str, ...] = ()  # web origins that may call the server from a browser
    auth_token: str = ""  # non-empty: every endpoint needs "Authorization: Bearer <token>"
    infer_workers: int = 2  # /infer requests computed at once
    infer_queue: int = 32  # more wait; beyond that 503
    infer_timeout_s: float = 120.0  # a request whose result is not ready by then is answered 503

    def __post_init__(self):
        if int(self.infer_workers) < 1 or int(self.infer_queue) < 0 or not float(self.infer_timeout_s) > 0:
            raise ValueError(f"infer_workers must be at least 1, infer_queue at least 0 and infer_timeout_s > 0, got "
                             f"{self.infer_workers}, {self.infer_queue}, {self.infer_timeout_s}")


def configure(server: ServerConfig) -> None:
    """Remember the ``server`` configuration section (called once when the app module loads)."""
    _settings.clear()
    _settings.update(asdict(server))


def auth_token() -> str:
    """The configured access token ('' when none)."""
    return str(_settings.get("auth_token") or os.environ.get(TOKEN_ENV, "") or "")


def _origins() -> list[str]:
    return [str(o).rstrip("/") for o in (_settings.get("cors_origins") or [])]


def _hosts() -> list[str]:
    hosts = [str(h) for h in (_settings.get("allowed_hosts") or [])]
    return hosts or list(LOOPBACK_HOSTS)


class AccessGuard:
    """Pure ASGI middleware: the cross-site write check and the access token (see the module's docstring)."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()):
        self.app = app
        self.allowed_origins = {o.rstrip("/") for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        refusal = self.refusal(request)
        if refusal is not None:
            status, message = refusal
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return await JSONResponse({"detail": message}, status_code=status, headers=headers)(scope, receive, send)
        return await self.app(scope, receive, send)

    def refusal(self, request: Request) -> tuple[int, str] | None:
        origin = request.headers.get("origin")
        if request.method not in SAFE_METHODS and origin and origin != "null":
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin.rstrip("/") != own and origin.rstrip("/") not in self.allowed_origins:
                return 403, (f"cross-site request from {urlsplit(origin).netloc or origin[:80]} refused; "
                             "allow that origin with --conf server.cors_origins '[\"<origin>\"]'")
        elif request.method not in SAFE_METHODS and origin == "null":
            return 403, "request from an opaque origin (a sandboxed page or a file) refused"
        token = auth_token()
        if token and request.url.path not in OPEN_PATHS and request.method != "OPTIONS":
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), token.encode()):
                return 401, "this server needs an access token: send 'Authorization: Bearer <token>'"
        return None


def install(app: FastAPI) -> None:
    """Replace MONAI Label's allow-all CORS with this module's rules (before the app serves a request)."""
    app.user_middleware = [m for m in app.user_middleware if m.cls is not CORSMiddleware]
    origins = _origins()
    app.add_middleware(AccessGuard, allowed_origins=origins)
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=False, allow_methods=["*"],
                           allow_headers=["*"])
    hosts = _hosts()
    if "*" not in hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)


router = APIRouter(prefix="/auth", tags=["Auth"])


@router.get("/", summary="Check If Auth is Enabled")
async def api_auth_enabled():
    return {"enabled": bool(auth_token()), "client_id": None, "realm": None}


@router.post("/token", summary="Fetch the access token (password = the server's token)")
async def api_access_token(form: OAuth2PasswordRequestForm = Depends()):
    token = auth_token()
    if not token:
        return {"access_token": None, "token_type": None}
    if not secrets.compare_digest(form.password.encode(), token.encode()):
        raise HTTPException(status_code=401, detail="wrong token: enter the server's access token as the password")
    return {"access_token": token, "token_type": "Bearer"}


@router.get("/token/valid", summary="Check If current token is Valid")
async def api_valid_token():
    return {"username": "token", "roles": ["admin"]} if auth_token() else {}
