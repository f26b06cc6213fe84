"""The fleet mirror's schema in PostgreSQL (docs/fleet.md): its version, kept in `mirror_schema`, and the steps that
take a database from one version to the next. MIGRATIONS[n] takes the schema from version n to n + 1 (from 0: the
tables made on first start); `mirror_db.Database` runs the steps a database lacks, once, in one transaction, under
an advisory lock, by the first replica started on it. A later version adds its step here and raises SCHEMA_VERSION.
"""

from __future__ import annotations

SCHEMA_VERSION = 2
LOCK_KEY = 0x76676D6972726F72  # pg_advisory_xact_lock key of the schema's creation and migrations ("vgmirror")

# MIGRATIONS[n] takes the schema from version n to n + 1.
MIGRATIONS: dict[int, str] = {0: """
CREATE TABLE mirror_gateways (
    gid serial PRIMARY KEY,
    venue text NOT NULL,
    gateway_id text NOT NULL,
    status jsonb,
    last_seen timestamptz,
    batches bigint NOT NULL DEFAULT 0,
    readings bigint NOT NULL DEFAULT 0,
    events bigint NOT NULL DEFAULT 0,
    changes bigint NOT NULL DEFAULT 0,
    duplicates bigint NOT NULL DEFAULT 0,
    snapshot_asks bigint NOT NULL DEFAULT 0,
    asked_snapshot_at timestamptz,
    UNIQUE (venue, gateway_id)
);
CREATE TABLE mirror_snapshots (
    gid integer NOT NULL REFERENCES mirror_gateways,
    version bigint NOT NULL,
    taken_at text,
    assets jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gid, version)
);
CREATE TABLE mirror_deltas (
    gid integer NOT NULL REFERENCES mirror_gateways,
    from_version bigint NOT NULL,
    to_version bigint NOT NULL,
    PRIMARY KEY (gid, to_version, from_version)
);
CREATE TABLE mirror_changes (
    gid integer NOT NULL REFERENCES mirror_gateways,
    version bigint NOT NULL,
    change jsonb NOT NULL,
    PRIMARY KEY (gid, version)
);
CREATE TABLE mirror_batches (
    gid integer NOT NULL REFERENCES mirror_gateways,
    batch_id text NOT NULL,
    first_seq bigint,
    last_seq bigint,
    readings integer NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gid, batch_id)
);
CREATE TABLE mirror_readings (
    gid integer NOT NULL,
    seq bigint NOT NULL,
    ts double precision NOT NULL,
    asset text NOT NULL,
    metric text NOT NULL,
    value double precision
);
CREATE INDEX mirror_readings_series ON mirror_readings (gid, asset, metric, ts, seq);
CREATE INDEX mirror_readings_time ON mirror_readings USING brin (ts);
CREATE TABLE mirror_events (
    id bigserial PRIMARY KEY,
    gid integer NOT NULL REFERENCES mirror_gateways,
    event_id text NOT NULL,
    kind text,
    doc jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gid, event_id)
);
CREATE INDEX mirror_events_box ON mirror_events (gid, id);
""", 1: """
CREATE TABLE mirror_twins (
    gid integer PRIMARY KEY REFERENCES mirror_gateways,
    version bigint NOT NULL,
    assets jsonb NOT NULL
);
INSERT INTO mirror_twins (gid, version, assets)
    SELECT DISTINCT ON (gid) gid, version, assets FROM mirror_snapshots ORDER BY gid, version DESC;
"""}
