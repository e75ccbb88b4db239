-- The append-only event store.
--
-- Global order: every event records the id of the transaction that wrote it
-- (pg_current_xact_id(), xid8). Readers see only events whose transaction id is below the
-- xmin of their snapshot (every transaction with a smaller id has ended), and order by
-- (transaction_id, position). A transaction that took its positions early but commits late
-- therefore sorts after everything a reader has already passed: no reader skips it.

CREATE TABLE es_events (
    position        bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version > 0),
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT es_events_log_order PRIMARY KEY (transaction_id, position),
    CONSTRAINT es_events_event_id_unique UNIQUE (event_id),
    CONSTRAINT es_events_stream_version_unique UNIQUE (stream_id, stream_version)
);

CREATE TABLE es_snapshots (
    stream_id      text PRIMARY KEY,
    version        bigint      NOT NULL CHECK (version > 0),
    schema_version integer     NOT NULL,
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL
);

-- Append-only: the toolkit never updates or deletes an event; make the database refuse it too.
CREATE FUNCTION es_events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'es_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER es_events_append_only
    BEFORE UPDATE OR DELETE ON es_events
    FOR EACH STATEMENT EXECUTE FUNCTION es_events_are_immutable();

-- One append, in one round trip and one transaction.
--
-- p_notify: send NOTIFY es_events from this transaction (delivered at its commit). A
-- notifying commit takes a cluster-wide lock, so appends on their own transaction leave it
-- to the client, which sends one NOTIFY per burst of appends instead of one per commit.
--
-- expected_kind: 0 any, 1 no stream, 2 stream exists, 3 exact (expected_version).
-- Outcomes:
--   'appended'  positions/stream_version describe the new events;
--   'conflict'  stream_version is the stream's actual version; nothing stored.
-- An event id stored before fails the insert on es_events_event_id_unique. In both of these
-- cases the client looks the ids up: a batch stored before in full, on this stream, is a
-- retry after a lost reply and is reported as such. (Looking the ids up here, on every
-- append, would cost an index probe per event on the hot path for a rare case.)
CREATE FUNCTION es_append(
    p_stream_id        text,
    p_expected_kind    smallint,
    p_expected_version bigint,
    p_event_ids        uuid[],
    p_event_types      text[],
    p_schema_versions  integer[],
    p_payloads         jsonb[],
    p_metadata         jsonb,
    p_notify           boolean
) RETURNS TABLE (
    outcome          text,
    stream_version   bigint,
    transaction_id   bigint,
    positions        bigint[],
    recorded_at      timestamptz
) LANGUAGE plpgsql AS $$
DECLARE
    v_count   bigint := cardinality(p_event_ids);
    v_current bigint;
    v_ok      boolean;
BEGIN
    -- Writers of one stream queue on a lock of their own (held until commit); writers of
    -- other streams run on. A transaction-level advisory lock writes nothing, unlike a row
    -- lock on a streams table. Under READ COMMITTED the version is read after the lock is
    -- granted, so it sees the previous holder's committed events; under a stale snapshot
    -- (REPEATABLE READ) the unique (stream_id, stream_version) constraint refuses the insert.
    PERFORM pg_advisory_xact_lock(hashtextextended('es_stream:' || p_stream_id, 0));
    SELECT coalesce(max(e.stream_version), 0) INTO v_current
    FROM es_events e WHERE e.stream_id = p_stream_id;

    v_ok := CASE p_expected_kind
                WHEN 0 THEN true
                WHEN 1 THEN v_current = 0
                WHEN 2 THEN v_current > 0
                ELSE v_current = p_expected_version
            END;
    IF NOT v_ok THEN
        RETURN QUERY SELECT 'conflict', v_current, NULL::bigint, NULL::bigint[], NULL::timestamptz;
        RETURN;
    END IF;

    RETURN QUERY
    WITH inserted AS (
        INSERT INTO es_events (event_id, stream_id, stream_version, event_type, schema_version, payload, metadata)
        SELECT e.id, p_stream_id, v_current + e.n, e.t, e.v, e.p, p_metadata
        FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_payloads) WITH ORDINALITY AS e(id, t, v, p, n)
        ORDER BY e.n
        RETURNING es_events.position, es_events.stream_version
    )
    SELECT 'appended', v_current + v_count, pg_current_xact_id()::text::bigint,
           (SELECT array_agg(i.position ORDER BY i.stream_version) FROM inserted i),
           now();

    -- Inside a caller's transaction only the commit can tell readers; otherwise the client
    -- announces the append itself, after the commit, coalescing bursts (see notify.rs).
    IF p_notify THEN
        PERFORM pg_notify('es_events', '');
    END IF;
END;
$$;

-- One page of the global log after (p_after_commit, p_after_position), and the horizon of
-- the same snapshot: every transaction with an id below it has ended, so no event can still
-- appear before (horizon, 0). The first row always carries the horizon; when no event
-- matches, it is the only row and its event columns are NULL.
--
-- Planner settings are pinned: with stale statistics the planner misjudges the row
-- comparison and picks a bitmap scan plus sort, which reads the whole rest of the log for
-- every page. The log-order index gives the rows already sorted.
CREATE FUNCTION es_read_all(
    p_after_commit   bigint,
    p_after_position bigint,
    p_limit          integer,
    p_event_types    text[],
    p_categories     text[]
) RETURNS TABLE (
    horizon        bigint,
    commit         bigint,
    "position"     bigint,
    event_id       uuid,
    stream_id      text,
    stream_version bigint,
    event_type     text,
    schema_version integer,
    payload        jsonb,
    metadata       jsonb,
    recorded_at    timestamptz
) LANGUAGE plpgsql STABLE
  SET enable_bitmapscan = off
  SET enable_sort = off
AS $$
DECLARE
    v_horizon xid8 := pg_snapshot_xmin(pg_current_snapshot());
BEGIN
    RETURN QUERY
    SELECT v_horizon::text::bigint, e.*
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT ev.transaction_id::text::bigint, ev.position, ev.event_id, ev.stream_id,
               ev.stream_version, ev.event_type, ev.schema_version, ev.payload, ev.metadata,
               ev.recorded_at
        FROM es_events ev
        WHERE (ev.transaction_id, ev.position) > (p_after_commit::text::xid8, p_after_position)
          AND ev.transaction_id < v_horizon
          AND (p_event_types IS NULL OR ev.event_type = ANY (p_event_types))
          AND (p_categories IS NULL OR split_part(ev.stream_id, '-', 1) = ANY (p_categories))
        ORDER BY ev.transaction_id, ev.position
        LIMIT p_limit
    ) e ON true;
END;
$$;

-- The last event a reader can see now, or no row.
CREATE FUNCTION es_head() RETURNS TABLE (commit bigint, "position" bigint)
LANGUAGE sql STABLE
  SET enable_bitmapscan = off
  SET enable_sort = off
AS $$
    SELECT ev.transaction_id::text::bigint, ev.position
    FROM es_events ev
    WHERE ev.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY ev.transaction_id DESC, ev.position DESC
    LIMIT 1
$$;
