"""The core's small exception tree.

Business rejections are *events* (``OrderRejected``, ``CommandRejected``); exceptions are for
input that cannot be parsed or for what must never happen.
"""

from __future__ import annotations

__all__ = ["CoreError", "InvalidCommand", "InvalidValue", "InvariantViolation"]


class CoreError(Exception):
    """Base of every exception the core raises."""


class InvalidCommand(CoreError):
    """A message that is malformed: the edge must never let one through to the engine."""


class InvalidValue(InvalidCommand):
    """A field with a bad value; ``field`` names it, ``problem`` says what was wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class InvariantViolation(CoreError):
    """The state broke one of its invariants: a bug. The engine stops rather than go on."""
