"""The named views the engine answers (actors/wire/views.py), on the pure core."""

from actors.wire import views
from core_helpers import Market
from exness_actors.commands import CreateAccount


def market_with_two_accounts() -> Market:
    market = Market()
    market.run(CreateAccount(account_id=2, initial_deposit=1_000_000))
    market.quote(100_00, 100_02)
    return market


def test_new_positions_holds_the_position_the_last_command_opened():
    market = market_with_two_accounts()
    market.open(account_id=2)
    opened = market.open()
    assert list(views.new_positions(market.engine, 1)) == [opened.position_id]


def test_new_positions_is_empty_when_the_last_command_opened_none():
    market = market_with_two_accounts()
    market.open()
    market.pending(type="limit", price=90_00)
    assert views.new_positions(market.engine, 1) == {}


def test_new_positions_shows_nothing_of_another_account():
    market = market_with_two_accounts()
    market.open(account_id=2)
    assert views.new_positions(market.engine, 1) == {}
