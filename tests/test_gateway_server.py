"""The gateway as a served actor (hypercorn on a real socket), the OpenAPI contract, the offline
explorer, metrics, CORS and security headers."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import httpx
import pytest
import trio

from actors import gateway as gateway_module
from actors.gateway import OPENAPI_PATH, openapi_document, openapi_text, token_issuer_from_config
from actors.gateway.__main__ import main as gateway_cli
from actors.feed.price_feed import FeedStats
from exness_actors.commands import Quote
from gateway_helpers import API, PASSWORD, gateway_config, running_gateway
from supervisor import run_system

DESIGN_PATHS = [
    ("post", "/api/v1/auth/signup"), ("post", "/api/v1/auth/signin"), ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/signout"), ("get", "/api/v1/account"), ("post", "/api/v1/account/deposit"),
    ("post", "/api/v1/account/withdraw"), ("get", "/api/v1/account/ledger"), ("get", "/api/v1/instruments"),
    ("get", "/api/v1/quotes"), ("get", "/api/v1/quotes/{symbol}"), ("post", "/api/v1/orders"),
    ("get", "/api/v1/orders"), ("get", "/api/v1/orders/{order_id}"), ("delete", "/api/v1/orders/{order_id}"),
    ("patch", "/api/v1/orders/{order_id}"), ("get", "/api/v1/positions"),
    ("get", "/api/v1/positions/{position_id}"), ("post", "/api/v1/positions/{position_id}/close"),
    ("patch", "/api/v1/positions/{position_id}"), ("post", "/api/v1/positions/{position_id}/margin"),
    ("get", "/api/v1/history/positions"), ("get", "/api/v1/candles"), ("get", "/healthz"),
    ("get", "/readyz"), ("get", "/metrics"),
]


async def test_serves_over_a_real_socket_and_shuts_down_gracefully(tmp_path) -> None:
    cfg = gateway_config(tmp_path)
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(run_system, cfg, handle_signals=False, feed="none"))
        await system.handle.request(Quote(symbol="BTCUSDT", bid=6_500_000, ask=6_500_000))
        with trio.fail_after(30):
            async with trio.open_nursery() as gateway_nursery:
                info = await gateway_nursery.start(functools.partial(
                    gateway_module.run, handle=system.handle, store=system.store,
                    candles=system.actors["candles"], cfg=cfg, tokens=token_issuer_from_config(cfg),
                    persister=system.actors["persister"]))
                assert info.port > 0 and info.url == f"http://127.0.0.1:{info.port}"
                await _trade_over_http(info.url)
                assert info.statistics()["internal_errors"] == 0
                info.request_shutdown()
            # run() has returned: the port is closed
            assert info.stopped.is_set()
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient(base_url=info.url) as client:
                    await client.get("/healthz")
        system.request_shutdown()


async def test_graceful_shutdown_finishes_requests_in_flight(tmp_path) -> None:
    cfg = gateway_config(tmp_path)
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(run_system, cfg, handle_signals=False, feed="none"))
        answers: list[int] = []
        with trio.fail_after(30):
            async with trio.open_nursery() as gateway_nursery:
                info = await gateway_nursery.start(functools.partial(
                    gateway_module.run, handle=system.handle, store=system.store, candles=None, cfg=cfg,
                    tokens=token_issuer_from_config(cfg), shutdown=system.shutdown_requested))
                started = trio.Event()

                @info.app.get("/slow")
                async def slow() -> str:
                    started.set()
                    await trio.sleep(0.3)
                    return "done"

                async def call_slow() -> None:
                    async with httpx.AsyncClient(base_url=info.url) as client:
                        answers.append((await client.get("/slow")).status_code)

                gateway_nursery.start_soon(call_slow)
                await started.wait()
                system.request_shutdown()          # the supervisor's event stops the gateway too
            assert answers == [200] and info.stopped.is_set()


async def _trade_over_http(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post(f"{API}/auth/signup", json={"email": "net@example.com", "password": PASSWORD})
        assert response.status_code == 201
        response = await client.post(f"{API}/auth/signin", json={"email": "net@example.com", "password": PASSWORD})
        auth = {"Authorization": f"Bearer {response.json()['access_token']}"}
        response = await client.post(f"{API}/orders", headers=auth, json={
            "symbol": "BTCUSDT", "side": "sell", "type": "market", "margin": "10.00", "leverage": 3})
        assert response.status_code == 201, response.text
        assert response.json()["position"]["open_price"] == "64987.00"
        assert response.headers["content-type"] == "application/json"
        assert "server" not in response.headers
        response = await client.post(f"{API}/orders", headers={**auth, "Content-Type": "application/json"},
                                     content=b'{"symbol": "BTCUSDT", "margin": ' + b"1" * 20_000 + b"}")
        assert response.status_code == 413 and response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        response = await client.get(f"{API}/ping")
        assert response.json() == {"status": "ok"}
        for asset, size in (("/static/swagger-ui-bundle.js", 1_000_000), ("/static/swagger-ui.css", 100_000)):
            response = await client.get(asset)
            assert response.status_code == 200 and len(response.content) > size, asset


async def test_openapi_file_is_current() -> None:
    checked_in = OPENAPI_PATH.read_text(encoding="utf-8") if OPENAPI_PATH.exists() else ""
    assert checked_in == openapi_text(), (
        "schemas/openapi.json is stale: run `python -m actors.gateway --export-openapi schemas/openapi.json`")
    assert gateway_cli(["--check-openapi", str(OPENAPI_PATH)]) == 0


async def test_openapi_covers_the_design_table_and_resolves_its_references(tmp_path) -> None:
    document = openapi_document()
    for method, path in DESIGN_PATHS:
        assert method in document["paths"].get(path, {}), (method, path)
    text = json.dumps(document)
    schemas = document["components"]["schemas"]
    for reference in set(part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]):
        assert reference in schemas, reference
    assert document["paths"]["/api/v1/orders"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in document["paths"]["/api/v1/auth/signin"]["post"]
    stale = tmp_path / "openapi.json"
    stale.write_text("{}")
    assert gateway_cli(["--check-openapi", str(stale)]) == 1
    assert gateway_cli(["--export-openapi", str(stale)]) == 0
    assert stale.read_text() == openapi_text()


async def test_docs_work_offline_and_the_app_serves_its_openapi(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        response = await h.client.get("/docs")
        html = await response.get_data(as_text=True)
        assert response.status_code == 200 and response.mimetype == "text/html"
        assert "http://" not in html and "https://" not in html      # nothing from a CDN
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        for asset in ("/static/swagger-ui-bundle.js", "/static/swagger-ui.css", "/static/docs-init.js"):
            assert asset in html
        # (the big assets are fetched over the real socket: Quart's test client stalls on large files)
        response = await h.client.get("/static/docs-init.js")
        assert response.headers["Cache-Control"].startswith("public")
        assert "/openapi.json" in await response.get_data(as_text=True)
        for path in ("/redocs", "/scalar"):                       # quart-schema's CDN pages are off
            assert (await h.client.get(path)).status_code == 404
        response = await h.client.get("/openapi.json")
        assert await response.get_json() == json.loads(json.dumps(openapi_document()))


async def test_security_headers_and_cors(tmp_path) -> None:
    async with running_gateway(tmp_path, {"http": {"cors_origins": ["https://app.example"]}}) as h:
        response = await h.client.get(f"{API}/instruments", headers={"Origin": "https://app.example"})
        assert response.status_code == 200
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert headers["Access-Control-Allow-Origin"] == "https://app.example"
        preflight = await h.client.options(f"{API}/orders", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 204
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        other = await h.client.get(f"{API}/instruments", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
        instruments = (await other.get_json())["instruments"]
        assert [i["symbol"] for i in instruments] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        assert instruments[0] == {"symbol": "BTCUSDT", "price_decimals": 2, "qty_decimals": 8,
                                  "max_leverage": 100, "spread_bps": 2, "min_qty": "0.00001000",
                                  "maintenance_ratio": "0.0000"}
    async with running_gateway(tmp_path / "default") as h:        # default: no CORS at all
        response = await h.client.get(f"{API}/instruments", headers={"Origin": "https://app.example"})
        assert "Access-Control-Allow-Origin" not in response.headers


class _WebSocketStats:
    def statistics(self) -> dict:
        return {"clients": 3, "dropped_lagged": 1, "by_channel": {"quotes": 2}}


async def test_metrics_export_requests_orders_engine_and_actor_statistics(tmp_path) -> None:
    feed = FeedStats("synthetic", ("BTCUSDT",))
    feed.lag_s = 0.25
    async with running_gateway(tmp_path, feed_stats=feed, ws_stats=_WebSocketStats()) as h:
        auth = await h.trader("metrics@example.com")
        await h.quote_all()
        await h.call("POST", f"{API}/orders", headers=auth, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100", "leverage": 10})
        await h.call("POST", f"{API}/orders", headers=auth, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "60000", "margin": "100", "leverage": 10})
        response = await h.client.get("/metrics")
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.get_data(as_text=True)
        for expected in (
                'exness_orders_total{outcome="filled",reason=""} 1.0',
                'exness_orders_total{outcome="pending",reason=""} 1.0',
                'exness_http_request_duration_seconds_count{method="POST",route="/api/v1/orders"} 2.0',
                'exness_http_requests_total{method="POST",route="/api/v1/orders",status="201"} 2.0',
                "exness_engine_inbox_depth ", "exness_engine_inbox_capacity 10000.0",
                "exness_journal_fsync_seconds_p99 ", "exness_journal_fsyncs_total ",
                'exness_quote_age_seconds{symbol="BTCUSDT"}', 'exness_engine_subscriber_queued{subscriber="persister"}',
                "exness_feed_lag_seconds 0.25", "exness_ws_clients 3.0", "exness_ws_dropped_lagged 1.0",
                "exness_candles_quotes 3.0", "exness_persister_last_seq ", "exness_http_internal_errors_total 0.0"):
            assert expected in text, expected
        assert "by_channel" not in text


async def test_two_apps_do_not_share_metrics(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        other = gateway_module.create_app(handle=h.system.handle, store=h.system.store, candles=None,
                                          cfg=h.cfg, tokens=h.gateway.tokens)
        await h.client.get(f"{API}/ping")
        text = await (await other.test_client().get("/metrics")).get_data(as_text=True)
        assert "/api/v1/ping" not in text


def test_static_assets_are_vendored_with_their_licence() -> None:
    static = Path(gateway_module.__file__).resolve().parent.parent / "static"
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui.LICENSE", "docs-init.js"):
        assert (static / name).is_file(), name
    assert "Apache License" in (static / "swagger-ui.LICENSE").read_text()


async def _read_response(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response (head, body) read off a raw socket; the body by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, f"the server closed the connection mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))
    while len(body) < length:
        body += await stream.receive_some(65536)
    return head.lower(), body


@pytest.mark.parametrize(("method", "path", "status"), [
    (b"POST", b"/api/v1/orders", b"401"), (b"POST", b"/api/v1/no-such-route", b"404"),
    (b"PATCH", b"/api/v1/orders/not-an-id", b"401"), (b"PUT", b"/api/v1/orders", b"405")])
async def test_a_keep_alive_connection_survives_an_early_error_response(tmp_path, method, path, status) -> None:
    """The app answers before reading the body (the body's packet arrives later): the next
    request on the same connection is still answered."""
    body = b'{"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "10", "leverage": 2}'
    async with running_gateway(tmp_path) as h:
        stream = await trio.open_tcp_stream("127.0.0.1", h.system.actors["gateway"].port)
        with trio.fail_after(10):
            await stream.send_all(b"%s %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: %d\r\n\r\n" % (method, path, len(body)))
            await trio.sleep(0.2)
            await stream.send_all(body)
            head, _ = await _read_response(stream)
            assert head.startswith(b"http/1.1 " + status), head
            await stream.send_all(b"GET /api/v1/ping HTTP/1.1\r\nHost: test\r\n\r\n")
            head, answer = await _read_response(stream)
        assert head.startswith(b"http/1.1 200") and json.loads(answer) == {"status": "ok"}
        await stream.aclose()


@pytest.mark.parametrize(("path", "length", "status"), [(b"/api/v1/orders", 100, b"401"),
                                                        (b"/api/v1/auth/signin", 20_000, b"413")])
async def test_an_early_error_response_to_a_body_that_never_comes_closes_the_connection(
        tmp_path, path, length, status) -> None:
    """A client that waits for the answer before sending its body (or announces one larger than
    ``max_body_bytes``) is told ``Connection: close`` and the connection is closed, not left hanging."""
    async with running_gateway(tmp_path) as h:
        stream = await trio.open_tcp_stream("127.0.0.1", h.system.actors["gateway"].port)
        with trio.fail_after(10):
            await stream.send_all(b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: %d\r\n\r\n" % (path, length))
            head, _ = await _read_response(stream)
            assert head.startswith(b"http/1.1 " + status) and b"\r\nconnection: close" in head, head
            assert await stream.receive_some(65536) == b""
        await stream.aclose()


async def test_metrics_labels_stay_bounded_under_unknown_methods_and_paths(tmp_path) -> None:
    """A fuzzer's made-up methods and paths must not mint new series on the public /metrics."""
    async with running_gateway(tmp_path) as h:
        await h.client.get(f"{API}/ping")
        before = await (await h.client.get("/metrics")).get_data(as_text=True)
        for number in range(100):
            for method in (f"FUZZ{number}", "get", "PROPFIND"):
                await h.client.open(f"{API}/fuzz/{number}", method=method)
                await h.client.open(f"{API}/ping", method=method)
        text = await (await h.client.get("/metrics")).get_data(as_text=True)
    series = [line for line in text.splitlines() if line.startswith("exness_http_")]
    assert len(series) - len([line for line in before.splitlines() if line.startswith("exness_http_")]) < 60
    assert "FUZZ" not in text and "PROPFIND" not in text and 'method="get"' not in text and "/fuzz/" not in text
    assert 'exness_http_requests_total{method="OTHER",route="unmatched",status="405"} 200.0' in text
