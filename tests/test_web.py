"""The web terminal's server side: the page at ``/`` with its Content-Security-Policy and WS URL,
versioned assets with long-cache headers, and the optional HttpOnly refresh cookie of the auth
routes (the bearer flow is unchanged: tests/test_gateway.py)."""

from __future__ import annotations

import re

import pytest


from gateway_helpers import API, PASSWORD, gateway_config, running_gateway

COOKIE = "exness_refresh"


def asset_version() -> str:
    from actors.gateway._web import asset_version
    return asset_version()


def _csp(response) -> dict[str, str]:
    directives = (part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    return {name: value for name, value in directives}


async def test_the_page_is_served_at_the_root_with_a_strict_csp(tmp_path) -> None:
    async with running_gateway(tmp_path, {"ws": {"port": 7999}}) as h:
        response = await h.client.get("/")
        html = await response.get_data(as_text=True)
        assert response.status_code == 200 and response.mimetype == "text/html"
        assert response.headers["Cache-Control"] == "no-cache"
        csp = _csp(response)
        assert csp["script-src"] == "'self'" and csp["default-src"] == "'none'"
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
        assert "unsafe-eval" not in response.headers["Content-Security-Policy"]
        assert csp["connect-src"] == "'self' ws://localhost:7999"
        assert '<meta name="exness-ws-url" content="ws://localhost:7999">' in html
        assert re.findall(r"<script[^>]*>", html) == [f'<script type="module" src="/terminal/{asset_version()}/main.js">']
        assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html


async def test_the_ws_url_is_configurable_for_one_host_deployments(tmp_path) -> None:
    async with running_gateway(tmp_path, {"web": {"ws_url": "wss://trade.example.com/ws"}}) as h:
        response = await h.client.get("/")
        assert _csp(response)["connect-src"] == "'self' wss://trade.example.com"
        assert 'content="wss://trade.example.com/ws"' in await response.get_data(as_text=True)


@pytest.mark.parametrize("value", ["http://x", "ws://", 5])
def test_a_bad_ws_url_is_a_clear_config_error(tmp_path, value) -> None:
    from actors.config import ConfigError
    from actors.gateway._web import WebSettings
    with pytest.raises(ConfigError, match=r"\[web\] ws_url"):
        WebSettings.from_config(gateway_config(tmp_path, {"web": {"ws_url": value}}))


async def test_versioned_assets_are_cached_long_and_other_versions_are_404(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        html = await (await h.client.get("/")).get_data(as_text=True)
        version = asset_version()
        assert f"/terminal/{version}/main.js" in html
        response = await h.client.get(f"/terminal/{version}/main.js")
        assert response.status_code == 200 and "javascript" in response.mimetype
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        response = await h.client.get(f"/terminal/{version}/vendor/lightweight-charts.standalone.production.mjs")
        assert response.status_code == 200
        status, body = await h.call("GET", "/terminal/0000000000/main.js")
        assert (status, body["error"]["code"]) == (404, "NOT_FOUND")
        status, body = await h.call("GET", f"/terminal/{version}/../../gateway/_app.py")
        assert status == 404


async def test_signin_can_put_the_refresh_token_in_an_httponly_cookie(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.signup("cookie@example.com")
        response = await h.client.post(f"{API}/auth/signin", json={
            "email": "cookie@example.com", "password": PASSWORD, "refresh_cookie": True})
        body = await response.get_json()
        assert response.status_code == 200 and body["refresh_token"] is None and body["access_token"]
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        for attribute in ("HttpOnly", "SameSite=Strict", "Path=/api/v1/auth"):
            assert attribute in cookie, cookie

        # the test client keeps the cookie: refresh with an empty body rotates it
        first = cookie.split(";")[0]
        response = await h.client.post(f"{API}/auth/refresh", json={})
        assert response.status_code == 200, await response.get_data()
        assert (await response.get_json())["refresh_token"] is None
        second = response.headers["Set-Cookie"].split(";")[0]
        assert second != first

        # the spent cookie value again: the family is revoked, and the cookie is cleared
        response = await h.client.post(f"{API}/auth/refresh", json={}, headers={"Cookie": first})
        assert (await response.get_json())["error"]["code"] == "REFRESH_TOKEN_REUSED"
        assert "Max-Age=0" in response.headers["Set-Cookie"]


async def test_signout_with_the_cookie_revokes_it_and_clears_it(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.signup("out@example.com")
        await h.client.post(f"{API}/auth/signin", json={
            "email": "out@example.com", "password": PASSWORD, "refresh_cookie": True})
        response = await h.client.post(f"{API}/auth/signout", json={})
        assert response.status_code == 204 and "Max-Age=0" in response.headers["Set-Cookie"]
        status, body = await h.call("POST", f"{API}/auth/refresh", json={})
        assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR")
        assert body["error"]["details"]["field"] == "refresh_token"


@pytest.mark.parametrize("value", ["yes", 1, None])
async def test_refresh_cookie_must_be_a_boolean(tmp_path, value) -> None:
    async with running_gateway(tmp_path) as h:
        await h.signup("flag@example.com")
        status, body = await h.call("POST", f"{API}/auth/signin", json={
            "email": "flag@example.com", "password": PASSWORD, "refresh_cookie": value})
        assert (status, body["error"]["details"]["field"]) == (400, "refresh_cookie")


# ------------------------------------------------------------------ the shared module (static/common)

PAGES = {"/": "terminal", "/admin": "backoffice"}
CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".svg": "image/svg+xml"}
# The headers a served asset carries, page-own or shared alike (not those that describe the body).
VARYING = {"content-length", "content-type", "date", "etag", "last-modified"}


def _lasting(headers) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items() if key.lower() not in VARYING}


def _common_files():
    from actors.gateway._web import COMMON_DIR
    return sorted(path for path in COMMON_DIR.rglob("*") if path.is_file())


async def test_the_shared_assets_are_served_in_each_pages_tree_with_the_same_headers(tmp_path) -> None:
    from actors.gateway._web import BACKOFFICE_DIR, COMMON_DIR, TERMINAL_DIR
    from actors.gateway._web import asset_version as version_of
    directories = {"terminal": TERMINAL_DIR, "backoffice": BACKOFFICE_DIR}
    assert {path.suffix for path in _common_files()} == set(CONTENT_TYPES)
    async with running_gateway(tmp_path) as h:
        for route, name in PAGES.items():
            base = f"/{name}/{version_of(directories[name])}"
            html = await (await h.client.get(route)).get_data(as_text=True)
            # the shared stylesheet first, then the page's own: the page adds to it
            assert re.findall(r'<link rel="stylesheet" href="([^"]+)">', html) == [
                f"{base}/common/base.css", f"{base}/{name}.css"]
            assert f'<link rel="icon" href="{base}/common/icon.svg"' in html
            own = await h.client.get(f"{base}/main.js")
            assert own.status_code == 200
            for path in _common_files():
                relative = path.relative_to(COMMON_DIR).as_posix()
                response = await h.client.get(f"{base}/common/{relative}")
                assert response.status_code == 200, (name, relative)
                assert response.headers["Content-Type"] == CONTENT_TYPES[path.suffix], relative
                assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
                assert await response.get_data() == path.read_bytes()
                assert _lasting(response.headers) == _lasting(own.headers), relative
            for bad in ("common/../main.js", "common/../../terminal/main.js", "common/nothing.js", "common/",
                        "index.html", "common/index.html"):
                status, _ = await h.call("GET", f"{base}/{bad}")
                assert status == 404, bad
        status, _ = await h.call("GET", f"/terminal/0000000000/common/base.css")
        assert status == 404


def test_a_change_to_a_shared_file_gives_the_page_a_new_version(tmp_path) -> None:
    from actors.gateway._web import page_files, page_version
    page, common = tmp_path / "page", tmp_path / "common"
    page.mkdir(), common.mkdir()
    (page / "index.html").write_text("{{base}}")
    (page / "main.js").write_text("import './common/session.js';\n")
    (common / "session.js").write_text("export const a = 1;\n")
    assert [name for name, _ in page_files(page, common)] == ["main.js", "common/session.js"]
    before = page_version(page, common)
    (common / "session.js").write_text("export const a = 2;\n")
    assert page_version(page, common) != before
    (page / "index.html").write_text("{{base}} changed")          # the template is not an asset
    assert page_version(page, common) == page_version(page, common)


def _code_lines(path) -> list[str]:
    """A file's lines that carry code: stripped, without blanks, comments and lone punctuation."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("//", "/*", "*")) or re.fullmatch(r"[{}()\[\];,]+", line):
            continue
        lines.append(line)
    return lines


def _runs(path, length: int = 6) -> set[tuple[str, ...]]:
    lines = _code_lines(path)
    return {tuple(lines[start:start + length]) for start in range(len(lines) - length + 1)}


def test_neither_page_carries_its_own_copy_of_the_shared_code() -> None:
    from actors.gateway._web import BACKOFFICE_DIR, COMMON_DIR, TERMINAL_DIR
    pages = {"terminal": TERMINAL_DIR, "backoffice": BACKOFFICE_DIR}
    for directory in pages.values():
        # its common/ URLs are the shared directory's: a page's own common/ would be shadowed
        assert not (directory / "common").exists(), directory
    own_files = [path for directory in pages.values() for path in sorted(directory.rglob("*"))
                 if path.suffix in (".js", ".css") and "vendor" not in path.parts]
    # what common/ defines is defined nowhere else
    for marker, shared in (("class ApiError", "session.js"), ("fetch(", "session.js"), ("--bg:", "base.css"),
                           ("function toast(", "dom.js"), (".toast {", "base.css"), ("function group(", "format.js"),
                           ("exness-theme", "dom.js"), ("function cell(", "dom.js")):
        assert marker in (COMMON_DIR / shared).read_text(), marker
        assert [path.name for path in own_files if marker in path.read_text()] == [], marker
    # and no run of six lines of code of a shared file stands again in a page's file
    shared_runs = {path.name: _runs(path) for path in _common_files() if path.suffix in (".js", ".css")}
    for path in own_files:
        for name, runs in shared_runs.items():
            assert not runs & _runs(path), f"{path.relative_to(COMMON_DIR.parent)} repeats common/{name}"
    # nor between the two pages' own code
    terminal = set().union(*(_runs(path) for path in own_files if TERMINAL_DIR in path.parents))
    backoffice = set().union(*(_runs(path) for path in own_files if BACKOFFICE_DIR in path.parents))
    assert not terminal & backoffice, sorted(terminal & backoffice)[:3]
