"""The HTTP gateway: the trading API under ``/api/v1`` (DESIGN.md §5), on quart-trio served by
hypercorn's trio worker.

* :func:`create_app` builds the app over a running engine (tests use ``app.test_client()``);
* :func:`run` is the actor: it serves the app on ``[http] host``/``port`` and hands a
  :class:`GatewayInfo` (bound port, graceful shutdown) to ``task_status.started``;
* :func:`openapi_document` / :func:`export_openapi` give the OpenAPI document
  (``python -m actors.gateway --export-openapi schemas/openapi.json``);
* :func:`token_issuer_from_config` builds the JWT issuer shared with the WebSocket server.

Settings (``[http]``, ``[limits]``, ``[auth]``) are described in :mod:`actors.gateway._settings`;
the error contract and per-request hooks in :mod:`actors.gateway._app`; where each answer comes
from (engine or store) in :mod:`actors.gateway._trading`.
"""

from actors.gateway._app import create_app
from actors.gateway._openapi import OPENAPI_PATH, export_openapi, openapi_document, openapi_text
from actors.gateway._server import GatewayInfo, hypercorn_config, run
from actors.gateway._settings import GatewaySettings, token_issuer_from_config

__all__ = [
    "create_app", "run", "GatewayInfo", "GatewaySettings", "hypercorn_config",
    "token_issuer_from_config", "openapi_document", "openapi_text", "export_openapi", "OPENAPI_PATH",
]
