"""OpenAPI links: which operation a response leads to, with the values it carries.

A client (or a fuzzer following links) learns from them that the ``order.id`` of a placed order
is the ``order_id`` of GET/PATCH/DELETE ``/orders/{order_id}``, that ``next_cursor`` is the
next page's ``cursor``, and that sign-in's ``refresh_token`` is what refresh and sign-out take.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_links"]

_ORDER_OPERATIONS = ("get_get_order", "patch_modify_order", "delete_cancel_order")
_POSITION_OPERATIONS = ("get_get_position", "patch_modify_position", "post_close_position", "post_add_margin")


def _to(operations: tuple[str, ...], parameter: str, expression: str) -> dict[str, dict]:
    return {operation: {"operationId": operation, "parameters": {parameter: expression}}
            for operation in operations}


def _next_page(operation: str, *kept: str) -> dict[str, dict]:
    """The same query (``kept`` parameters) from the next cursor."""
    parameters = {name: f"$request.query.{name}" for name in kept}
    parameters["cursor"] = "$response.body#/next_cursor"
    return {"next_page": {"operationId": operation, "parameters": parameters,
                          "description": "the next page, while next_cursor is not null"}}


def _refresh_token() -> dict[str, dict]:
    return {operation: {"operationId": operation, "requestBody": {"refresh_token": "$response.body#/refresh_token"}}
            for operation in ("post_refresh", "post_signout")}


#: (operationId, status) -> the links of that response.
LINKS: dict[tuple[str, str], dict[str, dict]] = {
    ("post_place_order", "201"): {**_to(_ORDER_OPERATIONS, "order_id", "$response.body#/order/id"),
                                  **_to(_POSITION_OPERATIONS, "position_id", "$response.body#/position/id")},
    ("post_place_order", "200"): _to(_ORDER_OPERATIONS, "order_id", "$response.body#/order/id"),
    ("get_get_order", "200"): _to(_ORDER_OPERATIONS, "order_id", "$response.body#/id"),
    ("patch_modify_order", "200"): _to(_ORDER_OPERATIONS, "order_id", "$response.body#/id"),
    ("get_get_position", "200"): _to(_POSITION_OPERATIONS, "position_id", "$response.body#/id"),
    ("patch_modify_position", "200"): _to(_POSITION_OPERATIONS, "position_id", "$response.body#/id"),
    ("post_add_margin", "200"): _to(_POSITION_OPERATIONS, "position_id", "$response.body#/id"),
    ("get_list_orders", "200"): _next_page("get_list_orders", "status", "symbol", "limit"),
    ("get_get_ledger", "200"): _next_page("get_get_ledger", "limit"),
    ("get_position_history", "200"): _next_page("get_position_history", "symbol", "reason", "start", "end",
                                                "limit"),
    ("get_list_candles", "200"): _next_page("get_list_candles", "symbol", "interval", "start", "end", "limit"),
    ("post_signin", "200"): _refresh_token(),
    ("post_refresh", "200"): _refresh_token(),
}


def add_links(document: dict[str, Any]) -> None:
    """Put :data:`LINKS` into the responses of ``document`` (an OpenAPI 3.1 dict)."""
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                links = LINKS.get((operation["operationId"], str(status)))
                if links:
                    response["links"] = links
