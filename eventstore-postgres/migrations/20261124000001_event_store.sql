-- The append-only event store.
--
-- Global order: every event records the id of the transaction that wrote it
-- (pg_current_xact_id(), xid8). Readers see only events whose transaction id is below the
-- xmin of their snapshot (every transaction with a smaller id has ended), and order by
-- (transaction_id, position). A transaction that took its positions early but commits late
-- therefore sorts after everything a reader has already passed: no reader skips it.

CREATE TABLE es_streams (
    stream_id text PRIMARY KEY,
    version   bigint NOT NULL CHECK (version >= 0)
);

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
-- expected_kind: 0 any, 1 no stream, 2 stream exists, 3 exact (expected_version).
-- Outcomes:
--   'appended'  positions/stream_version describe the new events;
--   'conflict'  actual_version is the stream's version; nothing stored;
--   'stored'    some of the event ids were stored before: stored_* describe those events
--               (the client decides whether this is a retry of the same batch).
CREATE FUNCTION es_append(
    p_stream_id        text,
    p_expected_kind    smallint,
    p_expected_version bigint,
    p_event_ids        uuid[],
    p_event_types      text[],
    p_schema_versions  integer[],
    p_payloads         jsonb[],
    p_metadata         jsonb
) RETURNS TABLE (
    outcome          text,
    stream_version   bigint,
    transaction_id   bigint,
    positions        bigint[],
    recorded_at      timestamptz,
    stored_ids       uuid[],
    stored_streams   text[],
    stored_versions  bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_count   bigint := cardinality(p_event_ids);
    v_current bigint;
    v_exists  boolean;
    v_ok      boolean;
BEGIN
    LOOP
        -- Lock the stream's row: writers of one stream queue here, other streams run on.
        SELECT s.version INTO v_current FROM es_streams s WHERE s.stream_id = p_stream_id FOR UPDATE;
        v_exists := FOUND;
        IF NOT v_exists THEN
            v_current := 0;
        END IF;

        -- A retry of a batch that was stored already (the reply was lost)? Checked after the
        -- lock, so a retry racing its original sees the original's committed events.
        IF EXISTS (SELECT 1 FROM es_events e WHERE e.event_id = ANY (p_event_ids)) THEN
            RETURN QUERY
                SELECT 'stored', v_current, NULL::bigint, array_agg(e.position ORDER BY e.stream_version),
                       min(e.recorded_at), array_agg(e.event_id ORDER BY e.stream_version),
                       array_agg(e.stream_id ORDER BY e.stream_version),
                       array_agg(e.stream_version ORDER BY e.stream_version)
                FROM es_events e WHERE e.event_id = ANY (p_event_ids);
            RETURN;
        END IF;

        v_ok := CASE p_expected_kind
                    WHEN 0 THEN true
                    WHEN 1 THEN v_current = 0
                    WHEN 2 THEN v_current > 0
                    ELSE v_current = p_expected_version
                END;
        IF NOT v_ok THEN
            RETURN QUERY SELECT 'conflict', v_current, NULL::bigint, NULL::bigint[], NULL::timestamptz,
                                NULL::uuid[], NULL::text[], NULL::bigint[];
            RETURN;
        END IF;

        IF v_exists THEN
            UPDATE es_streams s SET version = v_current + v_count WHERE s.stream_id = p_stream_id;
            EXIT;
        END IF;
        INSERT INTO es_streams (stream_id, version) VALUES (p_stream_id, v_count)
            ON CONFLICT ON CONSTRAINT es_streams_pkey DO NOTHING;
        EXIT WHEN FOUND;
        -- Another writer created the stream meanwhile: look again, under its lock.
    END LOOP;

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
           now(), NULL::uuid[], NULL::text[], NULL::bigint[];

    PERFORM pg_notify('es_events', '');
END;
$$;
