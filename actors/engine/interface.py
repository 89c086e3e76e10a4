"""The engine interface: what every actor outside the engine package holds.

Two implementations: :class:`~actors.engine.actor.EngineHandle` (the engine runs in this
process) and :class:`~actors.bus.streams.RemoteEngineHandle` (split mode: the engine is another
process, reached over Redis Streams). Callers submit commands, run *named views* of the state
(:mod:`actors.wire.views`; they travel through the inbox like commands and are answered in order
with them) and subscribe to the durable event batches. They never read the core's ``Engine``:
the same code then runs in-process and remote.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Protocol, runtime_checkable

from actors.engine.messages import InboxItem, Reply
from exness_actors.instruments import CoreConfig, Instrument

__all__ = ["EngineClient", "ENGINE_CLIENT_MEMBERS"]


@runtime_checkable
class EngineClient(Protocol):
    """Submit, query a named view, subscribe — and the few facts fixed for the engine's life."""

    @property
    def remote(self) -> bool:
        """True when the engine is another process (each read is a round trip over the bus)."""

    @property
    def accepting(self) -> bool:
        """False once the engine stops taking commands (or the bus is unreachable)."""

    @property
    def durable_seq(self) -> int:
        """The newest seq known durable (shard 0's for a sharded remote engine)."""

    @property
    def core_config(self) -> CoreConfig:
        """The core's configuration, pinned for the engine's life."""

    @property
    def instruments(self) -> Mapping[str, Instrument]:
        """The traded instruments by symbol."""

    def shard_of(self, account_id: Optional[int]) -> int:
        """The engine shard that holds ``account_id``."""

    def durable_seq_of(self, shard: int) -> int:
        """The seq up to which ``shard``'s journal is durable."""

    def send_nowait(self, item: InboxItem) -> None:
        """Queue an inbox item; raises ``Overloaded`` or ``EngineStopped``."""

    async def request(self, command: Any) -> Reply:
        """Submit a command and wait until its outcome is durable."""

    async def query(self, fn: Callable[..., Any]) -> Any:
        """Run a named view in order with the commands."""

    def subscribe(self, name: str, *, max_buffer: int = 1024, lossless: bool = False) -> Any:
        """A bounded stream of the engine's durable event batches."""

    def unsubscribe(self, subscription: Any) -> None:
        """Stop a subscription and close its stream."""

    def statistics(self) -> dict[str, Any]:
        """Counters for the metrics endpoint."""


#: the members both handles must have (tests/test_architecture.py checks it)
ENGINE_CLIENT_MEMBERS = ("remote", "accepting", "durable_seq", "core_config", "instruments", "shard_of",
                         "durable_seq_of", "send_nowait", "request", "query", "subscribe", "unsubscribe",
                         "statistics")
