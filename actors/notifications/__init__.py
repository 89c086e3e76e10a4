"""The notifications worker (issue 13): engine events → the ``notifications`` WebSocket channel,
e-mail and webhooks, with per-account preferences (see ``worker.py``)."""

from actors.notifications.kinds import CHANNELS, KINDS, derive, notification_json
from actors.notifications.preferences import PreferencesError, apply_update, default_preferences, preferences_json
from actors.notifications.worker import NotificationWorker, WorkerStatistics, run

__all__ = ["run", "NotificationWorker", "WorkerStatistics", "KINDS", "CHANNELS", "derive", "notification_json",
           "PreferencesError", "apply_update", "default_preferences", "preferences_json"]
