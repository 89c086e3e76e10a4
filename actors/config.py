"""Configuration: the shipped ``config.toml`` < ``--config FILE`` < environment < flags.

Environment overrides are ``EXNESS_<SECTION>__<KEY>`` (e.g. ``EXNESS_HTTP__PORT=9000``,
``EXNESS_INSTRUMENTS__BTCUSDT__SPREAD_BPS=3``); values are parsed as TOML scalars when they look
like one (numbers, booleans, quoted strings), otherwise taken as plain strings. ``REDIS_URL`` and
``DATABASE_URL`` fill ``bus.redis_url`` and ``store.database_url``.

A :class:`Config` is a read-only view over the merged tables; :attr:`Config.settings` parses them
once into typed sections (actors/settings.py), which is what the actors and the supervisor read.
"""

from __future__ import annotations

import copy
import functools
import os
import tomllib
from pathlib import Path
from typing import Any, Mapping, Optional

from actors._shipped import shipped_path
from actors.settings import Settings, parse_settings
from exness_actors.instruments import CoreConfig, core_config_from_mapping
from exness_actors.money import parse_fixed

__all__ = ["Config", "load_config", "ConfigError", "SHIPPED_CONFIG", "prepare_data_dir"]

SHIPPED_CONFIG = shipped_path("config.toml")


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the key."""


def prepare_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` (and its parents) when missing and check that it takes a file; a
    :class:`ConfigError` saying which directory and why otherwise."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"data dir {data_dir} is not writable: {exc.strerror or exc}") from None


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _parse_scalar(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith("EXNESS_") or "__" not in name:
            continue
        path = [part.lower() for part in name[len("EXNESS_"):].split("__")]
        if not all(path):
            continue
        if path[0] == "instruments" and len(path) > 1:
            path[1] = path[1].upper()        # symbols keep their case
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_scalar(value)
    if environ.get("REDIS_URL"):
        out.setdefault("bus", {})["redis_url"] = environ["REDIS_URL"]
    if environ.get("DATABASE_URL"):
        out.setdefault("store", {})["database_url"] = environ["DATABASE_URL"]
    return out


class Config:
    """The merged configuration. ``cfg["http"]["port"]``, ``cfg.data_dir``, ``cfg.core``."""

    def __init__(self, tables: dict[str, Any]) -> None:
        self.tables = tables

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.tables.get(section, {})

    @functools.cached_property
    def settings(self) -> Settings:
        """The typed sections, parsed on first use (``load_config`` does it at once)."""
        return parse_settings(self.tables)

    @property
    def data_dir(self) -> Path:
        return self.settings.data.path

    @property
    def core(self) -> CoreConfig:
        try:
            return core_config_from_mapping(self["engine"], self["instruments"], self["accounts"])
        except Exception as exc:
            raise ConfigError(f"[engine]/[instruments]/[accounts]: {exc}") from None

    @property
    def demo_deposit_cents(self) -> int:
        try:
            return parse_fixed(self["engine"].get("demo_deposit", "0"), 2,
                               field="engine.demo_deposit", allow_zero=True)
        except Exception as exc:
            raise ConfigError(str(exc)) from None

    @property
    def signup_account_type(self) -> Optional[str]:
        """``[accounts] signup_type``: the account type a sign-up opens (``OpenAccount``), or None
        (unset) for an untyped isolated account (``CreateAccount``, as before account types)."""
        name = self["accounts"].get("signup_type")
        if name is None:
            return None
        names = [account_type.name for account_type in self.core.account_types]
        if not isinstance(name, str) or name not in names:
            raise ConfigError(f"[accounts] signup_type must be one of the configured types "
                              f"({', '.join(names) or 'none'}), not {name!r}")
        return name

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Config":
        tables = copy.deepcopy(self.tables)
        _merge(tables, overrides)
        return Config(tables)


def load_config(path: Optional[os.PathLike[str] | str] = None, *,
                environ: Optional[Mapping[str, str]] = None,
                overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """Merge the shipped defaults, an optional file, the environment and explicit overrides."""
    tables: dict[str, Any] = {}
    if SHIPPED_CONFIG.exists():
        with SHIPPED_CONFIG.open("rb") as handle:
            tables = tomllib.load(handle)
    if path is not None:
        try:
            with open(path, "rb") as handle:
                _merge(tables, tomllib.load(handle))
        except FileNotFoundError:
            raise ConfigError(f"--config {path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    _merge(tables, _env_overrides(os.environ if environ is None else environ))
    if overrides:
        _merge(tables, overrides)
    config = Config(tables)
    config.core  # validate the instruments early, with a clear message
    config.settings
    return config
