"""JSON bodies for the errors hypercorn answers before the app sees a request.

h11 refuses a request it cannot parse (400) or whose head is larger than hypercorn's
``h11_max_incomplete_size`` (431), and hypercorn answers those with an empty body. The app never
sees them, so neither a handler nor an ASGI wrapper can help; hypercorn offers no hook either.
:func:`install` replaces the one method that writes that response
(``H11Protocol._send_error_response``) with one that writes the API's error format.
"""

from __future__ import annotations

import json
from itertools import chain
from typing import Any

import h11
from hypercorn.protocol.h11 import H11Protocol

from actors.wire.codec import error_body

__all__ = ["install", "early_error_body"]

_ERRORS = {
    400: ("BAD_REQUEST", "the request is not valid HTTP/1.1"),
    431: ("HEADERS_TOO_LARGE", "the request line and headers are larger than {max_bytes} bytes"),
}


def early_error_body(status: int, max_bytes: int) -> bytes:
    """The JSON error body of an early ``status``."""
    code, message = _ERRORS.get(status, ("BAD_REQUEST", "the request cannot be served"))
    details = {"max_bytes": max_bytes} if status == 431 else {}
    return json.dumps(error_body(code, message.format(max_bytes=max_bytes), details)).encode()


async def _send_error_response(self: Any, status_code: int) -> None:
    body = early_error_body(status_code, self.config.h11_max_incomplete_size)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), (b"x-content-type-options", b"nosniff"),
               (b"cache-control", b"no-store")]
    await self._send_h11_event(h11.Response(status_code=status_code,
                                            headers=list(chain(headers, self.config.response_headers("h11")))))
    await self._send_h11_event(h11.Data(data=body))
    await self._send_h11_event(h11.EndOfMessage())


def install() -> None:
    """Make hypercorn's early errors JSON (idempotent; affects every hypercorn server in the process)."""
    H11Protocol._send_error_response = _send_error_response   # type: ignore[method-assign]
