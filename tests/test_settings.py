"""Typed settings (actors/settings.py): parsed once, defaults equal to the shipped config.toml,
errors naming the key."""

import tomllib

import attrs
import pytest

from actors.config import SHIPPED_CONFIG, Config, ConfigError, load_config
from actors.settings import SECTIONS, Settings, parse_settings


def shipped_tables() -> dict:
    with SHIPPED_CONFIG.open("rb") as handle:
        return tomllib.load(handle)


#: sections whose other keys the core (``cfg.core``) or the feed (``price_feed.FeedSettings``) parse
SHARED_SECTIONS = {"engine", "feed"}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_the_defaults_equal_the_shipped_config(section):
    shipped = shipped_tables().get(section, {})
    defaults = attrs.asdict(getattr(Settings(), section))
    for key, value in shipped.items():
        assert key in defaults or section in SHARED_SECTIONS, f"[{section}] {key} is shipped but has no setting"
        if key in defaults:
            assert defaults[key] == value, f"[{section}] {key}: default {defaults[key]!r}, shipped {value!r}"


def test_an_empty_configuration_gets_the_shipped_values():
    assert parse_settings({}) == parse_settings(shipped_tables())


def test_the_settings_are_parsed_once():
    config = load_config(environ={})
    assert config.settings is config.settings


def test_overrides_reach_the_settings():
    config = load_config(environ={"EXNESS_JOURNAL__FSYNC": "off", "EXNESS_BUS__SHARDS": "4"})
    assert (config.settings.journal.fsync, config.settings.bus.shards) == ("off", 4)


@pytest.mark.parametrize(("tables", "message"), [
    ({"journal": {"fsync": "sometimes"}}, r"\[journal\] fsync = 'sometimes': must be one of batch, interval, off"),
    ({"journal": {"segment_mb": "64"}}, r"\[journal\] segment_mb = '64': expected an integer"),
    ({"bus": {"shards": 0}}, r"\[bus\] shards = 0: must be at least 1"),
    ({"bus": {"candles_role": 1}}, r"\[bus\] candles_role = 1: expected true or false"),
    ({"store": {"kind": "mysql"}}, r"\[store\] kind = 'mysql': must be one of sqlite, postgres"),
    ({"snapshot": {"interval_s": "soon"}}, r"\[snapshot\] interval_s = 'soon': expected a number"),
    ({"engine": {"inbox_size": True}}, r"\[engine\] inbox_size = True: expected an integer"),
    ({"persister": []}, r"\[persister\]: expected a table"),
])
def test_a_bad_value_names_its_key(tables, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings(tables)


def test_load_config_refuses_a_bad_value_at_once():
    with pytest.raises(ConfigError, match=r"\[snapshot\] keep = 0"):
        load_config(environ={"EXNESS_SNAPSHOT__KEEP": "0"})


def test_integers_are_accepted_where_seconds_are_expected():
    assert parse_settings({"candles": {"flush_interval_s": 2}}).candles.flush_interval_s == 2.0


def test_the_data_dir_comes_from_the_settings(tmp_path):
    assert Config({"data": {"dir": str(tmp_path)}}).data_dir == tmp_path
