"""Typed settings: the merged configuration parsed once into one frozen attrs class per section.

The defaults below equal the shipped ``config.toml`` (``tests/test_settings.py`` checks it), so a
table that leaves a key out gets the documented value. A value of the wrong type or out of range
is a :class:`~actors.config.ConfigError` naming ``[section] key``. Actors receive these objects
(``cfg.settings.journal``); nothing downstream calls ``cfg.get(section, key, default)``.

The gateway (``[http]``, ``[limits]``, ``[auth]``), the WebSocket server (``[ws]``) and the feed
(``[feed]``) parse their own sections with their own typed classes
(``GatewaySettings``, ``WsOptions``, ``FeedSettings``); the core reads ``[engine]`` and
``[instruments]`` through ``cfg.core``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import attrs

__all__ = ["Settings", "EngineSettings", "JournalSettings", "SnapshotSettings", "CandlesSettings",
           "PersisterSettings", "StoreSettings", "BusSettings", "FeedSourceSettings", "DataSettings", "NotificationSettings",
           "parse_settings"]

FSYNC_MODES = ("batch", "interval", "off")
STORE_KINDS = ("sqlite", "postgres")
BUS_KINDS = ("memory", "redis")
SMTP_SECURITY = ("none", "starttls", "tls")
NOTIFICATION_DELIVERY = ("auto", "process", "inline")


def _at_least(low: float) -> Any:
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value < low:
            raise ValueError(f"{attribute.name} = {value!r}: must be at least {low}")
    return check


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} = {value!r}: must be one of {', '.join(choices)}")
    return check


@attrs.frozen(kw_only=True)
class EngineSettings:
    """``[engine]`` keys read by the actors (the core reads the rest through ``cfg.core``)."""
    inbox_size: int = attrs.field(default=10_000, validator=_at_least(1))


@attrs.frozen(kw_only=True)
class JournalSettings:
    fsync: str = attrs.field(default="batch", validator=_one_of(FSYNC_MODES))
    segment_mb: int = attrs.field(default=64, validator=_at_least(1))
    fsync_interval_ms: int = attrs.field(default=5, validator=_at_least(0))
    archive_dir: str = ""

    @property
    def segment_bytes(self) -> int:
        return self.segment_mb * 1024 * 1024

    @property
    def archive_path(self) -> Optional[Path]:
        return Path(self.archive_dir) if self.archive_dir else None


@attrs.frozen(kw_only=True)
class SnapshotSettings:
    interval_s: float = attrs.field(default=60.0, validator=_at_least(0))
    #: also snapshot once this many inputs are durable past the last snapshot (0: by time only),
    #: so a busy engine's journal tail — what a restart replays — stays short (issue 14)
    every_inputs: int = attrs.field(default=100_000, validator=_at_least(0))
    keep: int = attrs.field(default=5, validator=_at_least(1))
    key: Optional[str] = None


@attrs.frozen(kw_only=True)
class CandlesSettings:
    flush_candles: int = attrs.field(default=500, validator=_at_least(1))
    flush_interval_s: float = attrs.field(default=1.0, validator=_at_least(0))


@attrs.frozen(kw_only=True)
class PersisterSettings:
    max_batches: int = attrs.field(default=64, validator=_at_least(1))
    max_items: int = attrs.field(default=20_000, validator=_at_least(1))


@attrs.frozen(kw_only=True)
class StoreSettings:
    kind: str = attrs.field(default="sqlite", validator=_one_of(STORE_KINDS))
    database_url: Optional[str] = None
    schema: str = ""
    pool_size: int = attrs.field(default=8, validator=_at_least(1))
    migrate_on_open: bool = True


@attrs.frozen(kw_only=True)
class BusSettings:
    kind: str = attrs.field(default="memory", validator=_one_of(BUS_KINDS))
    redis_url: Optional[str] = None
    shards: int = attrs.field(default=1, validator=_at_least(1))
    shard: int = attrs.field(default=0, validator=_at_least(0))
    request_timeout_s: float = attrs.field(default=5.0, validator=_at_least(0))
    fresh_quotes_wait_s: float = attrs.field(default=10.0, validator=_at_least(0))
    engine_instance: str = ""
    candles_role: bool = False
    persister_role: bool = False
    snapshotter_role: bool = False


@attrs.frozen(kw_only=True)
class FeedSourceSettings:
    """``[feed] source`` only: which feed runs (``price_feed.FeedSettings`` parses the rest)."""
    source: str = "synthetic"


@attrs.frozen(kw_only=True)
class DataSettings:
    dir: str = "./data"

    @property
    def path(self) -> Path:
        return Path(self.dir)


@attrs.frozen(kw_only=True)
class NotificationSettings:
    """``[notifications]``: the notifications worker (actors/notifications/, docs/operations.md)."""
    enabled: bool = True
    smtp_host: str = ""
    smtp_port: int = attrs.field(default=25, validator=_at_least(1))
    smtp_security: str = attrs.field(default="none", validator=_one_of(SMTP_SECURITY))
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "notifications@exness-actors.invalid"
    smtp_timeout_s: float = attrs.field(default=10.0, validator=_at_least(0.1))
    smtp_concurrency: int = attrs.field(default=2, validator=_at_least(1))
    webhook_timeout_s: float = attrs.field(default=5.0, validator=_at_least(0.1))
    webhook_concurrency: int = attrs.field(default=64, validator=_at_least(1))
    webhook_per_target: int = attrs.field(default=2, validator=_at_least(1))
    webhook_allow_http_loopback: bool = True
    max_attempts: int = attrs.field(default=8, validator=_at_least(1))
    retry_base_s: float = attrs.field(default=1.0, validator=_at_least(0))
    retry_max_s: float = attrs.field(default=600.0, validator=_at_least(0))
    poll_interval_s: float = attrs.field(default=1.0, validator=_at_least(0.01))
    max_batches: int = attrs.field(default=64, validator=_at_least(1))
    #: notifications older than this whose deliveries are settled are purged; 0 = keep forever
    retention_days: int = attrs.field(default=90, validator=_at_least(0))
    #: rows the purge deletes per transaction (it never holds a long lock)
    retention_batch: int = attrs.field(default=1000, validator=_at_least(1))
    #: split mode: the notifications role serves Prometheus ``/metrics`` on this port; 0 = off
    metrics_port: int = attrs.field(default=0, validator=_at_least(0))
    metrics_host: str = "127.0.0.1"

    #: where e-mail and webhooks are delivered: ``process`` (a child process of the worker),
    #: ``inline`` (the worker's tasks), ``auto`` (a child where an engine shares the process)
    delivery: str = attrs.field(default="auto", validator=_one_of(NOTIFICATION_DELIVERY))

    @property
    def email_available(self) -> bool:
        """An SMTP server is configured: the e-mail channel can be chosen."""
        return bool(self.smtp_host)


#: section name -> settings class (the order of ``Settings``'s fields)
SECTIONS: dict[str, type] = {
    "engine": EngineSettings, "journal": JournalSettings, "snapshot": SnapshotSettings,
    "candles": CandlesSettings, "persister": PersisterSettings, "store": StoreSettings,
    "bus": BusSettings, "feed": FeedSourceSettings, "data": DataSettings,
    "notifications": NotificationSettings,
}


@attrs.frozen(kw_only=True)
class Settings:
    """Every section the actors and the supervisor read, parsed once."""
    engine: EngineSettings = EngineSettings()
    journal: JournalSettings = JournalSettings()
    snapshot: SnapshotSettings = SnapshotSettings()
    candles: CandlesSettings = CandlesSettings()
    persister: PersisterSettings = PersisterSettings()
    store: StoreSettings = StoreSettings()
    bus: BusSettings = BusSettings()
    feed: FeedSourceSettings = FeedSourceSettings()
    data: DataSettings = DataSettings()
    notifications: NotificationSettings = NotificationSettings()


def _type_name(kind: Any) -> str:
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
             "Optional[str]": "a string"}
    return names.get(str(kind), str(kind))


def _check_type(section: str, key: str, value: Any, kind: Any) -> Any:
    from actors.config import ConfigError
    kind = str(kind)
    if kind == "Optional[str]" and (value is None or isinstance(value, str)):
        return value or None
    ok = {"bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "str": isinstance(value, str)}.get(kind, False)
    if not ok:
        raise ConfigError(f"[{section}] {key} = {value!r}: expected {_type_name(kind)}")
    return float(value) if kind == "float" else value


def _parse_section(section: str, cls: type, table: Mapping[str, Any]) -> Any:
    from actors.config import ConfigError
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}]: expected a table, got {table!r}")
    values = {field.name: _check_type(section, field.name, table[field.name], field.type)
              for field in attrs.fields(cls) if field.name in table}
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"[{section}] {exc}") from None


def parse_settings(tables: Mapping[str, Any]) -> Settings:
    """:class:`Settings` from the merged tables; a :class:`ConfigError` naming the first bad key."""
    return Settings(**{name: _parse_section(name, cls, tables.get(name, {}))
                       for name, cls in SECTIONS.items()})
