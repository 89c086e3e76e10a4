"""Split mode over Redis Streams: the trio Redis client (:mod:`.redis_client`), the engine side
and the remote engine handle (:mod:`.streams`), and the processes of each role (:mod:`.roles`)."""


from actors.bus.streams import RedisBus, RemoteEngineHandle, run_engine_edge, check_health
from actors.bus.roles import run_role, ROLES

__all__ = ["RedisBus", "RemoteEngineHandle", "run_engine_edge", "check_health", "run_role", "ROLES"]
