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
