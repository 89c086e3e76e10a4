"""Test support that ships with the package: Hypothesis strategies, invariant checks, replay and a
ready state machine (DESIGN.md §1, §7). Needs the ``test`` extra (Hypothesis); nothing else in
``exness_actors`` imports this subpackage.
"""

from exness_actors.testing.invariants import assert_triggers_respected, check_all, copy_input, replay
from exness_actors.testing.machine import TradingMachine, machine_config
from exness_actors.testing.strategies import (
    UNKNOWN_SYMBOL, account_ids, add_margins, cancel_orders, client_order_ids, clocks,
    close_positions, command_strategies, commands, core_configs, create_accounts, deposits,
    halt_symbols, instruments, modify_orders, modify_positions, place_orders, price_paths, prices,
    quotes, resume_symbols, symbols, time_steps, withdraws, update_instruments, adjust_balances, force_closes,
    place_alerts, cancel_alerts, cancel_all_afters, cancel_orders_in_bulk,
)

__all__ = [
    "TradingMachine", "machine_config",
    "check_all", "assert_triggers_respected", "replay", "copy_input",
    "symbols", "instruments", "core_configs", "prices", "quotes", "price_paths", "time_steps",
    "account_ids", "client_order_ids", "clocks", "create_accounts", "deposits", "withdraws",
    "place_orders", "cancel_orders", "modify_orders", "close_positions", "modify_positions",
    "add_margins", "halt_symbols", "resume_symbols", "commands", "command_strategies",
    "update_instruments", "adjust_balances", "force_closes", "place_alerts", "cancel_alerts", "cancel_all_afters",
    "cancel_orders_in_bulk", "UNKNOWN_SYMBOL",
]
