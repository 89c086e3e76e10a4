"""What HTTP and WebSocket share: the JSON codec for commands, state and errors (:mod:`.codec`)
and the named read views the engine actor answers (:mod:`.views`)."""


from actors.wire.codec import EdgeError

__all__ = ["EdgeError"]
