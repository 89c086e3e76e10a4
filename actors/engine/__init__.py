"""The engine package: the actor that owns the core ``Engine`` and everything around its state.

* :mod:`.actor`: the engine actor and its :class:`EngineHandle` (inbox, journal, replies, views);
* :mod:`.messages`: the messages actors exchange with the engine (requests, replies, batches);
* :mod:`.recovery`, :mod:`.repair`, :mod:`.scrubber`: start from snapshot + journal, cut a damaged
  journal, verify sealed segments;
* :mod:`.snapshotter`, :mod:`.snapshot_worker`, :mod:`.keys`: periodic encrypted snapshots;
* :mod:`.faults`: fatal I/O errors and the exit codes that name them.
"""


from actors.engine.actor import run, EngineHandle, Query, Subscription, submit_between
from actors.engine.messages import Request, Reply, ReplySlot, EventBatch, Burst, Overloaded, EngineStopped, EngineTimeout
from actors.engine.recovery import recover, Recovered, RecoveryError, journal_dir, snapshot_dir
from actors.engine.faults import FatalIOError
from actors.engine.interface import EngineClient

__all__ = ["run", "EngineHandle", "Query", "Subscription", "submit_between", "Request", "Reply", "ReplySlot", "EventBatch", "Burst", "Overloaded", "EngineStopped", "EngineTimeout", "recover", "Recovered", "RecoveryError", "journal_dir", "snapshot_dir", "FatalIOError", "EngineClient"]
