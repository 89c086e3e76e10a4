"""Stable enumerations shared by the core and the edge.

Reject reasons are used verbatim as API error codes, so a member is never renamed or
removed; new ones are appended.
"""

from __future__ import annotations

import enum

__all__ = ["RejectReason", "CloseReason", "CancelReason", "OrderStatus", "Side", "OrderType",
           "BalanceKind", "QuoteRejectReason", "AlertCondition", "OperatorActionKind"]


class RejectReason(str, enum.Enum):
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    MARKET_HALTED = "MARKET_HALTED"
    NO_QUOTE = "NO_QUOTE"
    STALE_QUOTE = "STALE_QUOTE"
    INVALID_LEVERAGE = "INVALID_LEVERAGE"
    INVALID_MARGIN = "INVALID_MARGIN"
    SIZE_TOO_SMALL = "SIZE_TOO_SMALL"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    SLIPPAGE_EXCEEDED = "SLIPPAGE_EXCEEDED"
    INVALID_PRICE = "INVALID_PRICE"
    INVALID_TPSL = "INVALID_TPSL"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    UNKNOWN_POSITION = "UNKNOWN_POSITION"
    ORDER_NOT_PENDING = "ORDER_NOT_PENDING"
    ACCOUNT_EXISTS = "ACCOUNT_EXISTS"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    INVALID_EXPIRY = "INVALID_EXPIRY"
    INVALID_QTY = "INVALID_QTY"
    WOULD_LIQUIDATE = "WOULD_LIQUIDATE"
    INVALID_COMMAND = "INVALID_COMMAND"
    INSUFFICIENT_MARGIN = "INSUFFICIENT_MARGIN"
    UNKNOWN_ACCOUNT_TYPE = "UNKNOWN_ACCOUNT_TYPE"
    # issue 13: the broker's side
    INVALID_REASON = "INVALID_REASON"      # an operator command without a reason (or too long)
    UNKNOWN_ALERT = "UNKNOWN_ALERT"
    TOO_MANY_ALERTS = "TOO_MANY_ALERTS"


class QuoteRejectReason(str, enum.Enum):
    CROSSED = "CROSSED"
    NON_POSITIVE = "NON_POSITIVE"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    OUT_OF_RANGE = "OUT_OF_RANGE"


class CloseReason(str, enum.Enum):
    USER = "user"
    TAKE_PROFIT = "take_profit"
    STOP_LOSS = "stop_loss"
    TRAILING_STOP = "trailing_stop"
    LIQUIDATION = "liquidation"
    STOP_OUT = "stop_out"
    OPERATOR = "operator"                  # force-closed by an operator (issue 13)


class CancelReason(str, enum.Enum):
    USER = "user"
    EXPIRED = "expired"
    SIZE_TOO_SMALL = "size_too_small"
    DEAD_MAN_SWITCH = "dead_man_switch"            # the account's cancel-all-after deadline passed
    CANCEL_ON_DISCONNECT = "cancel_on_disconnect"  # the WS connection that placed it dropped


class OrderStatus(str, enum.Enum):
    PENDING = "pending"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"


class Side(str, enum.Enum):
    BUY = "buy"
    SELL = "sell"


class OrderType(str, enum.Enum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"


class BalanceKind(str, enum.Enum):
    DEPOSIT = "deposit"
    WITHDRAW = "withdraw"
    ORDER_MARGIN = "order_margin"          # margin reserved by a pending order
    ORDER_RELEASE = "order_release"        # reserved margin back on cancel/expiry
    POSITION_MARGIN = "position_margin"    # margin locked by a new position
    POSITION_CLOSE = "position_close"      # margin released + pnl credited
    ADD_MARGIN = "add_margin"
    COMMISSION = "commission"              # a cross account's commission at open or close
    SWAP = "swap"                          # overnight swap at the daily rollover (negative = credited)
    BALANCE_RESET = "balance_reset"        # negative balance protection: the house absorbs a cross deficit
    OPERATOR_ADJUSTMENT = "operator_adjustment"   # an operator funded or debited the account (issue 13)


class AlertCondition(str, enum.Enum):
    """A price alert fires when the (marked-up) bid reaches its price from below / from above."""
    ABOVE = "above"
    BELOW = "below"


class OperatorActionKind(str, enum.Enum):
    """``OperatorAction.action``: what an operator command did (the audit trail, issue 13)."""
    HALT = "halt"
    RESUME = "resume"
    UPDATE_INSTRUMENT = "update_instrument"
    ADJUST_BALANCE = "adjust_balance"
    CLOSE_POSITION = "close_position"
