"""The OpenAPI document: built from the app's routes, exported to ``schemas/openapi.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from actors.config import load_config

__all__ = ["openapi_document", "openapi_text", "export_openapi", "OPENAPI_PATH"]

OPENAPI_PATH = Path(__file__).resolve().parent.parent.parent / "schemas" / "openapi.json"


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API. It depends on the code only (the shipped
    configuration, never the environment), so the exported file is reproducible."""
    from actors.gateway._app import create_app

    app = create_app(handle=None, store=None, candles=None, cfg=load_config(environ={}), tokens=None)
    return app.extensions["QUART_SCHEMA"].openapi_provider.schema()


def openapi_text() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_openapi(path: Path | str = OPENAPI_PATH) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(openapi_text(), encoding="utf-8")
    return path
