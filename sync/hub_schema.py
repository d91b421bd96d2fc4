"""The hub's tables, in SQLite's words (:mod:`sync.hub_sqlite`) and PostgreSQL's
(:mod:`sync.hub_postgres`), and the upgrades from schema 1 (alerts gained ``source_gate`` and
``held`` for the alert budget; gate names, which schema 1 took from the gates' heartbeats, are
forgotten) and from schema 2 (entries gained the indexed ``short_id`` of their ticket, for ticket
search, and the revocation key gates upload with it, so ``hub revoke`` takes a short id;
``alert_actions`` keeps the console's acknowledgements, assignments and notes). The
columns are the same in both; the types are each dialect's own.
"""

SQLITE = """
CREATE TABLE IF NOT EXISTS entries (
    cursor INTEGER PRIMARY KEY,
    gate_seq INTEGER NOT NULL, entry_id TEXT NOT NULL UNIQUE, gate_id TEXT NOT NULL,
    lane TEXT NOT NULL, ticket_ref TEXT NOT NULL, kind TEXT NOT NULL, verdict TEXT NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL, flags TEXT NOT NULL, annuls TEXT, zone INTEGER,
    wall_time REAL NOT NULL, clock_synced INTEGER NOT NULL, mono_ns INTEGER NOT NULL,
    boot_id TEXT NOT NULL, hlc INTEGER NOT NULL, rev_version INTEGER NOT NULL,
    offline INTEGER NOT NULL, in_feed INTEGER NOT NULL, received_at REAL NOT NULL,
    short_id TEXT NOT NULL DEFAULT '', rev_key TEXT,
    UNIQUE (gate_id, gate_seq)
);
CREATE INDEX IF NOT EXISTS entries_ticket_gate ON entries (ticket_ref, kind = 'attempt', gate_id);
CREATE INDEX IF NOT EXISTS entries_short_id ON entries (short_id);
CREATE TABLE IF NOT EXISTS alert_actions (
    action_id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL, action TEXT NOT NULL,
    actor TEXT NOT NULL, value TEXT NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_actions_alert ON alert_actions (alert_id, action);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id INTEGER PRIMARY KEY, dedupe_key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    ticket TEXT NOT NULL, gates TEXT NOT NULL, times TEXT NOT NULL, entries TEXT NOT NULL,
    detail TEXT NOT NULL, raised_at REAL NOT NULL, source_gate TEXT NOT NULL DEFAULT '',
    held INTEGER NOT NULL DEFAULT 0, gate_ids TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS alerts_source ON alerts (source_gate, raised_at);
CREATE TABLE IF NOT EXISTS gates (
    gate_id TEXT PRIMARY KEY, gate_name TEXT NOT NULL DEFAULT '', version TEXT NOT NULL DEFAULT '',
    outbox_depth INTEGER NOT NULL DEFAULT 0, oldest_unsynced_age_s REAL,
    revocation_version INTEGER NOT NULL DEFAULT 0, revocation_age_s REAL,
    trust_version INTEGER NOT NULL DEFAULT 0, clock_synced INTEGER NOT NULL DEFAULT 0,
    feed_cursor INTEGER NOT NULL DEFAULT 0, faults TEXT NOT NULL DEFAULT '[]', last_seen REAL
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, role TEXT NOT NULL, gate_id TEXT, name TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_gate_id ON tokens (gate_id);
CREATE TABLE IF NOT EXISTS revocation_deltas (version INTEGER PRIMARY KEY, document BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS revocation_keys (
    key BLOB NOT NULL, list TEXT NOT NULL, PRIMARY KEY (key, list)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
SQLITE_1_TO_2 = (
    "ALTER TABLE alerts ADD COLUMN source_gate TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE alerts ADD COLUMN held INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX IF NOT EXISTS alerts_source ON alerts (source_gate, raised_at);"
    # Schema 1 took names from heartbeats, so a gate could call itself "Gate A": forget them all.
    "UPDATE gates SET gate_name = '';"
)

POSTGRES = """
CREATE TABLE IF NOT EXISTS hub_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    cursor BIGSERIAL PRIMARY KEY,
    gate_seq BIGINT NOT NULL, entry_id TEXT NOT NULL UNIQUE, gate_id TEXT NOT NULL,
    lane TEXT NOT NULL, ticket_ref TEXT NOT NULL, kind TEXT NOT NULL, verdict TEXT NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL, flags TEXT NOT NULL, annuls TEXT, zone INTEGER,
    wall_time DOUBLE PRECISION NOT NULL, clock_synced BOOLEAN NOT NULL, mono_ns BIGINT NOT NULL,
    boot_id TEXT NOT NULL, hlc BIGINT NOT NULL, rev_version BIGINT NOT NULL,
    offline BOOLEAN NOT NULL, in_feed BOOLEAN NOT NULL, received_at DOUBLE PRECISION NOT NULL,
    short_id TEXT NOT NULL DEFAULT '', rev_key TEXT,
    UNIQUE (gate_id, gate_seq)
);
CREATE INDEX IF NOT EXISTS entries_ticket_gate
    ON entries (ticket_ref, (kind = 'attempt'), gate_id, cursor);
CREATE INDEX IF NOT EXISTS entries_short_id ON entries (short_id);
CREATE TABLE IF NOT EXISTS alert_actions (
    action_id BIGSERIAL PRIMARY KEY, alert_id BIGINT NOT NULL, action TEXT NOT NULL,
    actor TEXT NOT NULL, value TEXT NOT NULL, at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_actions_alert ON alert_actions (alert_id, action);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id BIGSERIAL PRIMARY KEY, dedupe_key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    ticket TEXT NOT NULL, gates TEXT[] NOT NULL, times DOUBLE PRECISION[] NOT NULL,
    entries TEXT[] NOT NULL, detail TEXT NOT NULL, raised_at DOUBLE PRECISION NOT NULL,
    source_gate TEXT NOT NULL DEFAULT '', held BIGINT NOT NULL DEFAULT 0,
    gate_ids TEXT[] NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS alerts_source ON alerts (source_gate, raised_at);
CREATE TABLE IF NOT EXISTS gates (
    gate_id TEXT PRIMARY KEY, gate_name TEXT NOT NULL DEFAULT '', version TEXT NOT NULL DEFAULT '',
    outbox_depth BIGINT NOT NULL DEFAULT 0, oldest_unsynced_age_s DOUBLE PRECISION,
    revocation_version BIGINT NOT NULL DEFAULT 0, revocation_age_s DOUBLE PRECISION,
    trust_version BIGINT NOT NULL DEFAULT 0, clock_synced BOOLEAN NOT NULL DEFAULT FALSE,
    feed_cursor BIGINT NOT NULL DEFAULT 0, faults TEXT[] NOT NULL DEFAULT '{}',
    last_seen DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, role TEXT NOT NULL, gate_id TEXT, name TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_gate_id ON tokens (gate_id);
CREATE TABLE IF NOT EXISTS revocation_deltas (version BIGINT PRIMARY KEY, document BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS revocation_keys (
    key BYTEA NOT NULL, list TEXT NOT NULL, PRIMARY KEY (key, list)
);
"""
POSTGRES_1_TO_2 = """
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS source_gate TEXT NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS held BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS alerts_source ON alerts (source_gate, raised_at);
UPDATE gates SET gate_name = '';
UPDATE hub_meta SET value = 'gate-agent-hub/2' WHERE key = 'schema';
"""

# Schema 2 to 3: the column and table first; the short ids are filled in by the store (Python
# computes them, ticket by ticket), then the index is built.
SQLITE_2_TO_3 = (
    "ALTER TABLE entries ADD COLUMN short_id TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE entries ADD COLUMN rev_key TEXT;"
    "CREATE TABLE IF NOT EXISTS alert_actions ("
    " action_id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL, action TEXT NOT NULL,"
    " actor TEXT NOT NULL, value TEXT NOT NULL, at REAL NOT NULL);"
    "CREATE INDEX IF NOT EXISTS alert_actions_alert ON alert_actions (alert_id, action);"
)
POSTGRES_2_TO_3 = """
ALTER TABLE entries ADD COLUMN IF NOT EXISTS short_id TEXT NOT NULL DEFAULT '';
ALTER TABLE entries ADD COLUMN IF NOT EXISTS rev_key TEXT;
CREATE TABLE IF NOT EXISTS alert_actions (
    action_id BIGSERIAL PRIMARY KEY, alert_id BIGINT NOT NULL, action TEXT NOT NULL,
    actor TEXT NOT NULL, value TEXT NOT NULL, at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_actions_alert ON alert_actions (alert_id, action);
"""
SHORT_ID_INDEX = "CREATE INDEX IF NOT EXISTS entries_short_id ON entries (short_id)"

# Each gate's entries, exits and annulments of a ticket, and apart from them its attempts, each in
# arrival order, so that each gate's last rows are read without the rest
# (sync.hub_rules.MAX_TICKET_HISTORY; in SQLite the cursor is the rowid, which every index holds).
# Run at every open (SQLite: in the store's first transaction; PostgreSQL: under the schema
# lock): a store made before it gets it once, in place of the earlier ticket indexes.
#
# And the rows an operator set apart (sync.hub_quarantine): the entries' columns as they are
# (types, no constraints: a gate_seq or an entry_id may be set apart more than once) and when;
# and the ids of the gates an alert names (alerts raised before have none), added apart
# (*_ALERT_GATE_IDS) where missing: SQLite has no ADD COLUMN IF NOT EXISTS, and PostgreSQL's
# would lock the alerts table at every open. A column added to entries later must be added to
# quarantined_entries too (tests/test_hub_store.py compares them). And the admissions of refused
# batches, shared with gates meanwhile (sync.hub_claims), and the runs each gate's heartbeats came
# from (sync.hub_twins). And the (gate_id, boot_id) index the runs check reads (sync.hub_annul).
SQLITE_AT_OPEN = (
    "CREATE INDEX IF NOT EXISTS entries_ticket_gate"
    " ON entries (ticket_ref, kind = 'attempt', gate_id);"
    "CREATE INDEX IF NOT EXISTS entries_gate_boot ON entries (gate_id, boot_id);"
    "DROP INDEX IF EXISTS entries_ticket_kind;"
    "DROP INDEX IF EXISTS entries_ticket_ref;"
    "CREATE TABLE IF NOT EXISTS quarantined_entries AS"
    " SELECT *, 0.0 AS quarantined_at FROM entries WHERE 0;"
    "CREATE INDEX IF NOT EXISTS quarantined_short_id ON quarantined_entries (short_id);"
    "CREATE INDEX IF NOT EXISTS quarantined_cursor ON quarantined_entries (cursor);"
    "CREATE INDEX IF NOT EXISTS quarantined_entry_id ON quarantined_entries (entry_id);"
    "CREATE TABLE IF NOT EXISTS claimed_entries ("
    " claim_id INTEGER PRIMARY KEY, entry_id TEXT NOT NULL UNIQUE, gate_id TEXT NOT NULL,"
    " gate_seq INTEGER NOT NULL, ticket_ref TEXT NOT NULL, wall_time REAL NOT NULL,"
    " hlc INTEGER NOT NULL, claimed_at REAL NOT NULL, short_id TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS claimed_gate ON claimed_entries (gate_id);"
    "CREATE INDEX IF NOT EXISTS claimed_short_id ON claimed_entries (short_id);"
    "CREATE TABLE IF NOT EXISTS gate_runs ("
    " seq INTEGER PRIMARY KEY, gate_id TEXT NOT NULL, run_id TEXT NOT NULL,"
    " first_seen REAL NOT NULL, last_seen REAL NOT NULL, address TEXT NOT NULL,"
    " UNIQUE (gate_id, run_id));"
)
POSTGRES_AT_OPEN = """
CREATE INDEX IF NOT EXISTS entries_ticket_gate
    ON entries (ticket_ref, (kind = 'attempt'), gate_id, cursor);
CREATE INDEX IF NOT EXISTS entries_gate_boot ON entries (gate_id, boot_id);
DROP INDEX IF EXISTS entries_ticket_kind;
DROP INDEX IF EXISTS entries_ticket_cursor;
DROP INDEX IF EXISTS entries_ticket_ref;
CREATE TABLE IF NOT EXISTS quarantined_entries AS
    SELECT *, 0.0::float8 AS quarantined_at FROM entries WITH NO DATA;
CREATE INDEX IF NOT EXISTS quarantined_short_id ON quarantined_entries (short_id);
CREATE INDEX IF NOT EXISTS quarantined_cursor ON quarantined_entries (cursor);
CREATE INDEX IF NOT EXISTS quarantined_entry_id ON quarantined_entries (entry_id);
CREATE TABLE IF NOT EXISTS claimed_entries (
    claim_id BIGSERIAL PRIMARY KEY, entry_id TEXT NOT NULL UNIQUE, gate_id TEXT NOT NULL,
    gate_seq BIGINT NOT NULL, ticket_ref TEXT NOT NULL, wall_time DOUBLE PRECISION NOT NULL,
    hlc BIGINT NOT NULL, claimed_at DOUBLE PRECISION NOT NULL, short_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS claimed_gate ON claimed_entries (gate_id);
CREATE INDEX IF NOT EXISTS claimed_short_id ON claimed_entries (short_id);
CREATE TABLE IF NOT EXISTS gate_runs (
    seq BIGSERIAL PRIMARY KEY, gate_id TEXT NOT NULL, run_id TEXT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,
    address TEXT NOT NULL, UNIQUE (gate_id, run_id));
"""
SQLITE_ALERT_GATE_IDS = "ALTER TABLE alerts ADD COLUMN gate_ids TEXT NOT NULL DEFAULT '[]'"
POSTGRES_ALERT_GATE_IDS = "ALTER TABLE alerts ADD COLUMN gate_ids TEXT[] NOT NULL DEFAULT '{}'"
