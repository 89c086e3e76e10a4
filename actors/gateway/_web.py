"""The web pages: the trading terminal at ``/`` (assets under ``/terminal/``) and the broker's
back office at ``/admin`` (assets under ``/backoffice/``; it signs operators in and reads
``/api/v1/admin``).

Each page is plain ES modules and CSS in ``actors/static/<name>/`` (shipped in the wheel). Its
assets are served under ``/<name>/<version>/…`` where the version is a digest of the directory's
files, so they are cached for a year (``immutable``) and a new release changes every URL; the
page itself is ``no-cache``. ``index.html`` is a template with two placeholders: the asset base
and the WebSocket URL (a ``<meta>`` tag, so the page needs no inline script).

What both pages share (the session and fetch wrapper, formatting, toasts, the theme switch, the
base stylesheet, the icon) is written once in ``actors/static/common/`` and served inside each
page's tree as ``/<name>/<version>/common/…``, its files part of that page's version: a module
imports ``./common/session.js`` relative to itself, so no page needs an import map (an inline
script its CSP would refuse) or a second version in its URLs. A page directory therefore has no
``common`` entry of its own.

Content-Security-Policy of the page: scripts, styles, images and fonts from this origin only (no
inline script or style, no ``eval``), ``connect-src`` this origin and the WebSocket's origin.

``[web] ws_url`` [""]: the WebSocket URL the page connects to. Empty: the page's own host name on
``[ws] port`` (``wss`` when the page came over HTTPS). Set it behind one host, e.g.
``wss://trade.example.com/ws`` (split mode: any gateway plus the ws role behind a proxy).
"""

from __future__ import annotations

import functools
import hashlib
import html
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
from quart import Response, request
from quart_schema import hide
from werkzeug.exceptions import NotFound
from werkzeug.security import safe_join

from actors.config import ConfigError
from actors.gateway._settings import read_setting

__all__ = ["register", "asset_version", "page_files", "page_version", "TERMINAL_DIR", "BACKOFFICE_DIR", "COMMON_DIR",
           "WebSettings"]

TERMINAL_DIR = Path(__file__).resolve().parent.parent / "static" / "terminal"
BACKOFFICE_DIR = Path(__file__).resolve().parent.parent / "static" / "backoffice"
COMMON_DIR = Path(__file__).resolve().parent.parent / "static" / "common"
COMMON_PREFIX = "common/"
ASSET_CACHE = "public, max-age=31536000, immutable"
_CONTENT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
                  ".svg": "image/svg+xml", ".png": "image/png"}


def _page_csp(ws_origin: str) -> str:
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"font-src 'self'; connect-src 'self' {ws_origin}; manifest-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def page_files(directory: Path, common: Path = COMMON_DIR) -> list[tuple[str, Path]]:
    """A page's assets by the name each is served under: its own files (not the ``index.html``
    template), then the shared ones under ``common/``."""
    own = [(path.relative_to(directory).as_posix(), path) for path in sorted(directory.rglob("*"))
           if path.is_file() and path.name != "index.html"]
    shared = [(COMMON_PREFIX + path.relative_to(common).as_posix(), path) for path in sorted(common.rglob("*"))
              if path.is_file()]
    return own + shared


def page_version(directory: Path, common: Path = COMMON_DIR) -> str:
    """A digest of every file a page serves (names and contents), the shared ones included: a
    change to ``common/`` moves both pages to new URLs."""
    digest = hashlib.sha256()
    for name, path in page_files(directory, common):
        digest.update(name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@functools.cache
def asset_version(directory: Path = TERMINAL_DIR) -> str:
    """The page's version (page_version), computed once: the files are part of the release."""
    return page_version(directory)


def _checked_ws_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"[web] ws_url = {value!r}: expected a string such as \"wss://trade.example.com/ws\"")
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError(f"[web] ws_url = {value!r}: expected ws://HOST[:PORT][/PATH] or wss://…, or \"\"")
    return value


@attrs.frozen(kw_only=True)
class WebSettings:
    ws_url: str = ""
    ws_port: int = 7070

    @classmethod
    def from_config(cls, cfg: Any) -> "WebSettings":
        if cfg is None:
            return cls()
        return cls(ws_url=_checked_ws_url(read_setting(cfg, "web", "ws_url", "", str)),
                   ws_port=read_setting(cfg, "ws", "port", 7070, int, low=0))


def _ws_url(settings: WebSettings) -> str:
    if settings.ws_url:
        return settings.ws_url
    scheme = "wss" if request.scheme == "https" else "ws"
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return f"{scheme}://{host}:{settings.ws_port}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@functools.cache
def _template(directory: Path) -> str:
    return (directory / "index.html").read_text(encoding="utf-8")


async def page(settings: WebSettings, directory: Path = TERMINAL_DIR) -> Response:
    """A page (the terminal's by default), its asset base and WebSocket URL filled in."""
    ws_url = _ws_url(settings)
    body = (_template(directory).replace("{{base}}", f"/{directory.name}/{asset_version(directory)}")
            .replace("{{ws_url}}", html.escape(ws_url, quote=True)))
    return Response(body, status=200, content_type="text/html; charset=utf-8", headers={
        "Cache-Control": "no-cache", "Content-Security-Policy": _page_csp(_origin(ws_url))})


@functools.cache
def _asset(directory: Path, name: str) -> tuple[bytes, str]:
    """A file's bytes and content type, read once (the directory is part of the release);
    ``common/…`` is the shared directory's."""
    if name.startswith(COMMON_PREFIX):
        joined = safe_join(str(COMMON_DIR), name.removeprefix(COMMON_PREFIX))
    else:
        joined = None if name == "index.html" else safe_join(str(directory), name)
    if joined is None or not Path(joined).is_file():
        raise NotFound()
    content_type = (_CONTENT_TYPES.get(Path(joined).suffix) or mimetypes.guess_type(joined)[0]
                    or "text/plain")
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    return Path(joined).read_bytes(), content_type


async def asset(version: str, name: str, directory: Path = TERMINAL_DIR) -> Response:
    """A file of a page under its versioned URL; any other version is 404."""
    if version != asset_version(directory):
        raise NotFound()
    body, content_type = _asset(directory, name)
    return Response(body, status=200, content_type=content_type, headers={"Cache-Control": ASSET_CACHE})


def register(app: Any, cfg: Any) -> None:
    settings = WebSettings.from_config(cfg)

    @app.get("/")
    @hide
    async def terminal_page() -> Response:
        return await page(settings)

    @app.get("/terminal/<version>/<path:name>")
    @hide
    async def terminal_asset(version: str, name: str) -> Response:
        return await asset(version, name)

    @app.get("/admin")
    @hide
    async def backoffice_page() -> Response:
        return await page(settings, BACKOFFICE_DIR)

    @app.get("/backoffice/<version>/<path:name>")
    @hide
    async def backoffice_asset(version: str, name: str) -> Response:
        return await asset(version, name, BACKOFFICE_DIR)
