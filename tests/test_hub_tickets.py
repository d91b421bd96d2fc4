"""Ticket search and the alert workflow at the store, on SQLite and PostgreSQL: a store of
schema 2 (before entries.short_id and alert_actions) is upgraded in place, its existing entries
found by their ticket's short id; new entries are found too; the workflow works after it.
"""

from __future__ import annotations

import sqlite3

import asyncpg
from msgspec.structs import replace

from agent.redact import short_id
from sync.hub_admin_console import history_lines
from sync.hub_stores import open_store
from tests.pg import pg_server, pg_url  # noqa: F401
from tests.test_hub_store import DROP_SCHEMA_3, POLICY, T0, Gate


async def _downgrade_to_schema_2(url: str) -> None:
    """Turn a new store back into what a hub of schema 2 left."""
    if url.startswith("sqlite://"):
        db = sqlite3.connect(url.removeprefix("sqlite://"))
        try:
            for sql in (*DROP_SCHEMA_3, "PRAGMA user_version = 2"):
                db.execute(sql)
            db.commit()
            columns = [r[1] for r in db.execute("PRAGMA table_info(entries)")]
        finally:
            db.close()
    else:
        conn = await asyncpg.connect(url)
        try:
            for sql in (
                *DROP_SCHEMA_3,
                "UPDATE hub_meta SET value = 'gate-agent-hub/2' WHERE key = 'schema'",
            ):
                await conn.execute(sql)
            columns = [
                r[0]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = 'entries'"
                )
            ]
        finally:
            await conn.close()
    assert "short_id" not in columns  # really a schema 2 store now


async def _has_short_id_index(url: str) -> bool:
    if url.startswith("sqlite://"):
        db = sqlite3.connect(url.removeprefix("sqlite://"))
        try:
            names = [r[1] for r in db.execute("PRAGMA index_list(entries)")]
        finally:
            db.close()
        return "entries_short_id" in names
    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval("SELECT to_regclass('entries_short_id') IS NOT NULL"))
    finally:
        await conn.close()


async def test_a_store_of_schema_2_is_upgraded_and_finds_old_tickets(hub_store_url: str) -> None:
    clock = [T0]  # one clock: g1's rows come before g2's in HLC order
    g1, g2 = Gate("g1", clock), Gate("g2", clock)
    store = await open_store(hub_store_url, POLICY)
    try:
        await store.set_gate_name("g1", "Gate A")
        await store.ingest("g1", [g1.row("t1"), g1.row("t2")], T0 + 10)
        await store.ingest("g2", [g2.row("t1"), g2.row("t1", "attempt", admit=False)], T0 + 20)
        (before,) = await store.recent_alerts(None, 10)
    finally:
        await store.close()
    await _downgrade_to_schema_2(hub_store_url)

    store = await open_store(hub_store_url, POLICY)
    try:
        found = await store.ticket_history(short_id("t1"), 100)
        assert found.tickets == 1 and not found.more
        assert [(e.gate, e.kind, e.verdict) for e in found.events] == [
            ("Gate A", "entry", "admit"),
            ("g2", "entry", "admit"),
            ("g2", "attempt", "deny"),
        ]
        assert [e.gate for e in (await store.ticket_history(short_id("t2"), 100)).events] == [
            "Gate A"
        ]
        cut = await store.ticket_history(short_id("t1"), 2)  # the newest two, oldest first
        assert [(e.gate, e.kind) for e in cut.events] == [("g2", "entry"), ("g2", "attempt")]
        assert cut.more and cut.rows == 3
        # Found in a user trial: `hub ticket` headed a cut history with the rows shown, not all.
        lines = history_lines(cut)
        assert lines[0] == f"ticket {short_id('t1')}: 3 rows; the newest 2 shown, at 1 gate (g2)"
        assert len(lines) == 3 and " entry " in lines[1]  # then the rows, oldest first
        # the alert raised before the upgrade takes the workflow
        assert await store.open_alerts() == 1
        assert await store.act_on_alert(before.alert_id, "ack", "security", "", T0 + 30) == "done"
        assert await store.act_on_alert(before.alert_id, "note", "lead", "seen", T0 + 31) == "done"
        assert await store.act_on_alert(999, "ack", "security", "", T0 + 32) == "unknown"
        (detailed,) = await store.alert_details([before])
        assert (detailed.workflow.acked_by, detailed.workflow.acked_at) == ("security", T0 + 30)
        assert [(n.by, n.text) for n in detailed.workflow.notes] == [("lead", "seen")]
        assert [c.gate for c in detailed.context] == ["Gate A", "g2"]
        assert await store.open_alerts() == 0
        await store.ingest("g2", [g2.row("t3")], T0 + 40)  # new rows carry their short id
        assert len((await store.ticket_history(short_id("t3"), 10)).events) == 1
    finally:
        await store.close()
    assert await _has_short_id_index(hub_store_url)
    store = await open_store(hub_store_url, POLICY)  # and opens again as schema 3
    try:
        assert len((await store.ticket_history(short_id("t1"), 100)).events) == 3
    finally:
        await store.close()


async def test_notes_are_capped_per_alert(hub_store_url: str) -> None:
    g1, g2 = Gate("g1"), Gate("g2")
    store = await open_store(hub_store_url, POLICY)
    try:
        await store.ingest("g1", [g1.row("t1")], T0 + 10)
        await store.ingest("g2", [g2.row("t1")], T0 + 20)
        (alert,) = await store.recent_alerts(None, 10)
        for i in range(100):
            assert await store.act_on_alert(alert.alert_id, "note", "a", f"n{i}", T0) == "done"
        assert await store.act_on_alert(alert.alert_id, "note", "a", "one more", T0) == "full"
        assert await store.act_on_alert(alert.alert_id, "assign", "a", "Dana", T0 + 1) == "done"
        assert await store.act_on_alert(alert.alert_id, "assign", "b", "", T0 + 2) == "done"
        (detailed,) = await store.alert_details([alert])
        assert len(detailed.workflow.notes) == 100
        assert detailed.workflow.assignee is None and detailed.workflow.assigned_by == "b"
    finally:
        await store.close()


async def test_a_revocation_key_finds_the_short_ids_of_its_rows(hub_store_url: str) -> None:
    """`hub ticket` given a 32-hex token id (the key `hub revoke` takes) finds the ticket by the
    key gates uploaded with its rows (found in a user trial: refused as "not a short id")."""
    g1, g2 = Gate("g1"), Gate("g2")
    key, other = "ab" * 16, "cd" * 16
    store = await open_store(hub_store_url, POLICY)
    try:
        await store.ingest("g1", [replace(g1.row("t1"), rev_key=key), g1.row("t2")], T0 + 10)
        await store.ingest("g2", [replace(g2.row("t1"), rev_key=key)], T0 + 20)
        assert await store.short_ids_with_key(key) == (short_id("t1"),)
        assert await store.short_ids_with_key(other) == ()
        await store.ingest("g2", [replace(g2.row("t3"), rev_key=key)], T0 + 30)  # a gate lying
        assert await store.short_ids_with_key(key) == tuple(sorted(map(short_id, ("t1", "t3"))))
        # Rows a quarantine set apart are still found: `hub ticket` shows them, marked.
        assert (await store.quarantine("g2", 1, T0 + 40)).moved
        assert await store.short_ids_with_key(key) == tuple(sorted(map(short_id, ("t1", "t3"))))
    finally:
        await store.close()
