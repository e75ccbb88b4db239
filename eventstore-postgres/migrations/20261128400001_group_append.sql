-- Several appends that arrived together, in one transaction and one round trip: a group
-- commit, so that concurrent writers share one transaction and one WAL flush.
--
-- Append n writes p_counts[n] events, taken in order from the flattened event arrays, to
-- p_streams[n], checked against its own expected version (p_kinds[n], p_versions[n]; the
-- kinds of es_append) with its own metadata. The stream locks of all appends are tried
-- first.
--
-- The group runs first as a whole; if any of its appends raises (an event id stored before,
-- a bad row), it runs again with each append in a block of its own, so that the error of
-- one undoes only that one and the others commit. One row per append: n, and
--   'appended'   stream_version, transaction_id, positions, recorded_at describe its events;
--   'conflict'   stream_version is the stream's actual version; nothing stored;
--   'duplicate'  an event id is stored already (the client looks the ids up, as for
--                es_append);
--   'busy'       its stream is locked by another transaction; nothing stored (the client
--                writes it on its own, waiting for the lock as es_append does);
--   'error'      anything else; detail holds SQLSTATE and message (the client runs that
--                append again on its own, so that it fails exactly as it would alone).

CREATE TYPE es_append_outcome AS (
    i               integer,
    outcome         text,
    stream_version  bigint,
    transaction_id  bigint,
    positions       bigint[],
    recorded_at     timestamptz,
    detail          text
);

-- One append of a group, its stream lock held: checks the expected version and inserts.
CREATE FUNCTION es_append_locked(
    p_n                integer,
    p_stream           text,
    p_kind             smallint,
    p_version          bigint,
    p_event_ids        uuid[],
    p_event_types      text[],
    p_schema_versions  integer[],
    p_payloads         jsonb[],
    p_metadata         jsonb
) RETURNS es_append_outcome LANGUAGE plpgsql AS $$
DECLARE
    v_current   bigint;
    v_ok        boolean;
    v_positions bigint[];
BEGIN
    SELECT coalesce(max(e.stream_version), 0) INTO v_current
    FROM es_events e WHERE e.stream_id = p_stream;
    v_ok := CASE p_kind
                WHEN 0 THEN true
                WHEN 1 THEN v_current = 0
                WHEN 2 THEN v_current > 0
                ELSE v_current = p_version
            END;
    IF NOT v_ok THEN
        RETURN ROW(p_n, 'conflict', v_current, NULL, NULL, NULL, NULL)::es_append_outcome;
    END IF;
    WITH inserted AS (
        INSERT INTO es_events (event_id, stream_id, stream_version, event_type, schema_version,
                               payload, metadata)
        SELECT e.id, p_stream, v_current + e.k, e.t, e.v, e.p, p_metadata
        FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_payloads)
             WITH ORDINALITY AS e(id, t, v, p, k)
        ORDER BY e.k
        RETURNING es_events.position, es_events.stream_version
    )
    SELECT array_agg(x.position ORDER BY x.stream_version) INTO v_positions FROM inserted x;
    RETURN ROW(p_n, 'appended', v_current + cardinality(p_event_ids),
               pg_current_xact_id()::text::bigint, v_positions, now(), NULL)::es_append_outcome;
END;
$$;

CREATE FUNCTION es_append_group(
    p_streams          text[],
    p_kinds            smallint[],
    p_versions         bigint[],
    p_counts           integer[],
    p_metadata         jsonb[],
    p_event_ids        uuid[],
    p_event_types      text[],
    p_schema_versions  integer[],
    p_payloads         jsonb[]
) RETURNS SETOF es_append_outcome LANGUAGE plpgsql AS $$
DECLARE
    v_stream   text;
    v_starts   integer[];
    v_outcomes es_append_outcome[] := '{}';
    v_one      es_append_outcome;
    v_busy     text[] := '{}';
BEGIN
    -- Nothing in a group waits long: a row lock (an event id another open transaction is
    -- inserting) times out, and that append is then written on its own.
    PERFORM set_config('lock_timeout', '1000ms', true);
    -- Try the locks only: a stream locked elsewhere (a caller's open transaction, another
    -- process's append) is left out of the group, never waited for, so a group holds no lock
    -- while it waits for another: no deadlock, and no stall of the whole group.
    FOR v_stream IN SELECT DISTINCT s FROM unnest(p_streams) AS s ORDER BY s LOOP
        IF NOT pg_try_advisory_xact_lock(hashtextextended('es_stream:' || v_stream, 0)) THEN
            v_busy := v_busy || v_stream;
        END IF;
    END LOOP;
    -- Where each append's events start in the flattened arrays.
    SELECT array_agg(start ORDER BY k) INTO v_starts
      FROM (SELECT k, 1 + (sum(c) OVER (ORDER BY k) - c)::integer AS start
              FROM unnest(p_counts) WITH ORDINALITY AS x(c, k)) starts;

    BEGIN
        FOR n IN 1 .. cardinality(p_streams) LOOP
            IF p_streams[n] = ANY (v_busy) THEN
                v_outcomes := v_outcomes
                    || ROW(n, 'busy', NULL, NULL, NULL, NULL, NULL)::es_append_outcome;
                CONTINUE;
            END IF;
            v_outcomes := v_outcomes || es_append_locked(
                n, p_streams[n], p_kinds[n], p_versions[n],
                p_event_ids[v_starts[n] : v_starts[n] + p_counts[n] - 1],
                p_event_types[v_starts[n] : v_starts[n] + p_counts[n] - 1],
                p_schema_versions[v_starts[n] : v_starts[n] + p_counts[n] - 1],
                p_payloads[v_starts[n] : v_starts[n] + p_counts[n] - 1],
                p_metadata[n]);
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        -- Everything of the first run is undone: once more, each append on its own.
        v_outcomes := '{}';
        FOR n IN 1 .. cardinality(p_streams) LOOP
            IF p_streams[n] = ANY (v_busy) THEN
                v_outcomes := v_outcomes
                    || ROW(n, 'busy', NULL, NULL, NULL, NULL, NULL)::es_append_outcome;
                CONTINUE;
            END IF;
            BEGIN
                v_one := es_append_locked(
                    n, p_streams[n], p_kinds[n], p_versions[n],
                    p_event_ids[v_starts[n] : v_starts[n] + p_counts[n] - 1],
                    p_event_types[v_starts[n] : v_starts[n] + p_counts[n] - 1],
                    p_schema_versions[v_starts[n] : v_starts[n] + p_counts[n] - 1],
                    p_payloads[v_starts[n] : v_starts[n] + p_counts[n] - 1],
                    p_metadata[n]);
            EXCEPTION
                WHEN unique_violation THEN
                    v_one := ROW(n, 'duplicate', NULL, NULL, NULL, NULL, SQLERRM)::es_append_outcome;
                WHEN OTHERS THEN
                    v_one := ROW(n, 'error', NULL, NULL, NULL, NULL,
                                 SQLSTATE || ': ' || SQLERRM)::es_append_outcome;
            END;
            v_outcomes := v_outcomes || v_one;
        END LOOP;
    END;
    RETURN QUERY SELECT * FROM unnest(v_outcomes);
END;
$$;

-- es_append, the single-append path, now shares its check and insert with the groups.
CREATE OR REPLACE FUNCTION es_append(
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
    v_one es_append_outcome;
BEGIN
    -- Writers of one stream queue on a lock of their own, held until commit (see the first
    -- version of this function in 20261124000001_event_store.sql).
    PERFORM pg_advisory_xact_lock(hashtextextended('es_stream:' || p_stream_id, 0));
    v_one := es_append_locked(1, p_stream_id, p_expected_kind, p_expected_version, p_event_ids,
                              p_event_types, p_schema_versions, p_payloads, p_metadata);
    -- Inside a caller's transaction only the commit can tell readers; otherwise the client
    -- announces the append itself, after the commit, coalescing bursts (see notify.rs).
    IF v_one.outcome = 'appended' AND p_notify THEN
        PERFORM pg_notify('es_events', '');
    END IF;
    RETURN QUERY SELECT v_one.outcome, v_one.stream_version, v_one.transaction_id,
                        v_one.positions, v_one.recorded_at;
END;
$$;

-- es_append for a lone append written while the client's other appends wait to form the
-- next group: it only tries its stream's lock, and answers 'busy' (nothing stored) when
-- another transaction holds it; the client then writes it with es_append, waiting for the
-- lock without holding up the others.
CREATE FUNCTION es_append_try(
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
    v_one es_append_outcome;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('es_stream:' || p_stream_id, 0)) THEN
        RETURN QUERY SELECT 'busy'::text, NULL::bigint, NULL::bigint, NULL::bigint[],
                            NULL::timestamptz;
        RETURN;
    END IF;
    v_one := es_append_locked(1, p_stream_id, p_expected_kind, p_expected_version, p_event_ids,
                              p_event_types, p_schema_versions, p_payloads, p_metadata);
    IF v_one.outcome = 'appended' AND p_notify THEN
        PERFORM pg_notify('es_events', '');
    END IF;
    RETURN QUERY SELECT v_one.outcome, v_one.stream_version, v_one.transaction_id,
                        v_one.positions, v_one.recorded_at;
END;
$$;
