"""Following a hub store's alerts: each new alert once, and again each one already read that
is acted on since (a note by security or by the hub, an acknowledgement, an assignment), so a
follower learns that a double admission was undone by an annulment, or that somebody took it.
`gate-agent hub alerts --follow` (:mod:`sync.hub_admin_console`) and the alert webhook
(:mod:`sync.hub_webhook`) follow with it.

Two cursors: the last alert read (``alert_id``) and the last action read (``action_id`` of
``alert_actions``). The actions are read before the new alerts, so an action landing between
the two reads shows in its new alert (read after it) or in the next step's updates, never in
neither. Action ids commit in the order they are taken: on SQLite one writer at a time; on
PostgreSQL every insert of an action (an ingest's hub notes, security's acts) holds the venue's
advisory lock, in every hub process on the database.
"""

from __future__ import annotations

from typing import Any

from sync.hub_console_sql import ActedAlert
from sync.hub_store import HubStore
from sync.protocol import Alert


class AlertFollower:
    """New and updated alerts of ``store`` after the cursors ``after`` and ``acted``."""

    def __init__(self, store: HubStore, after: int, acted: int) -> None:
        self._store = store
        self.after = after
        self._acted = acted

    @classmethod
    async def from_now(cls, store: HubStore) -> AlertFollower:
        """A follower of what happens from now on. Raises HubStoreError."""
        newest = await store.recent_alerts(None, 1)
        acted = await store.last_alert_action()
        return cls(store, newest[0].alert_id if newest else 0, acted)

    async def step(self, limit: int) -> tuple[list[Alert], list[ActedAlert]]:
        """The next ``limit`` new alerts, and the alerts read before that were acted on since
        (the actions of ``limit`` at most) with the latest action, both oldest first and with
        their details. The cursors move only when every read succeeded. Raises HubStoreError."""
        read_through = self.after
        changed, acted = await self._store.acted_alerts(self._acted, limit)
        new = await self._store.alert_details(await self._store.alerts(self.after, limit))
        before = [a for a in changed if a.alert.alert_id <= read_through]
        detailed = await self._store.alert_details([a.alert for a in before])
        updated = [a._replace(alert=alert) for a, alert in zip(before, detailed, strict=True)]
        self._acted = acted
        if new:
            self.after = new[-1].alert_id
        return new, updated


def update_json(u: ActedAlert) -> dict[str, Any]:
    """An alert acted on as JSON: the alert now, ``update`` true and ``change`` (its latest
    action and who did it: a console token's name, or "hub")."""
    return u.alert.to_json() | {"update": True, "change": {"action": u.action, "by": u.actor}}
