-- Each rule of the store in one place: the client's.
--
-- The expected version reaches the database as the range of stream versions it accepts
-- (p_min_version ..= p_max_version, NULL: no upper bound), which the client derives from
-- `ExpectedVersion::accepted_versions`; the database only compares. A category filter
-- reaches it as LIKE patterns of the stream ids, which the client derives from the category
-- rule (`StreamId::category`); the database only matches.
--
-- The new functions carry a `_v2` suffix. The functions of the previous release keep their
-- names and arguments, so that its processes go on working during a rolling deploy:
-- es_append, es_append_try and es_append_group become adapters of the new ones (translating
-- their kind codes once, in es_expected_range_of_kind), and es_read_all stays as it was.
-- All four, and es_append_locked, are dropped in the release after this one.

-- One append, its stream lock held: checks the stream's version against the accepted range
-- and inserts. (A name of its own: a call of the previous release that is running while this
-- migration commits may still resolve es_append_locked, which stays until the adapters go.)
CREATE FUNCTION es_append_checked(
    p_n                integer,
    p_stream           text,
    p_min_version      bigint,
    p_max_version      bigint,
    p_event_ids        uuid[],
    p_event_types      text[],
    p_schema_versions  integer[],
    p_payloads         jsonb[],
    p_metadata         jsonb
) RETURNS es_append_outcome LANGUAGE plpgsql AS $$
DECLARE
    v_current   bigint;
    v_positions bigint[];
BEGIN
    SELECT coalesce(max(e.stream_version), 0) INTO v_current
    FROM es_events e WHERE e.stream_id = p_stream;
    IF v_current < p_min_version OR v_current > p_max_version THEN
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

-- One append on its own. p_wait: wait for the stream's lock (false: answer 'busy', nothing
-- stored, when another transaction holds it; the client then writes it again, waiting, so
-- that the appends gathering into its next group are not held up). p_notify: see es_append.
CREATE FUNCTION es_append_v2(
    p_stream_id        text,
    p_min_version      bigint,
    p_max_version      bigint,
    p_event_ids        uuid[],
    p_event_types      text[],
    p_schema_versions  integer[],
    p_payloads         jsonb[],
    p_metadata         jsonb,
    p_notify           boolean,
    p_wait             boolean
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
    -- es_append in 20261124000001_event_store.sql).
    IF p_wait THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('es_stream:' || p_stream_id, 0));
    ELSIF NOT pg_try_advisory_xact_lock(hashtextextended('es_stream:' || p_stream_id, 0)) THEN
        RETURN QUERY SELECT 'busy'::text, NULL::bigint, NULL::bigint, NULL::bigint[],
                            NULL::timestamptz;
        RETURN;
    END IF;
    v_one := es_append_checked(1, p_stream_id, p_min_version, p_max_version, p_event_ids,
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

-- A group of appends (see es_append_group in 20261128400001_group_append.sql), each checked
-- against its own range of accepted versions.
CREATE FUNCTION es_append_group_v2(
    p_streams          text[],
    p_min_versions     bigint[],
    p_max_versions     bigint[],
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
            v_outcomes := v_outcomes || es_append_checked(
                n, p_streams[n], p_min_versions[n], p_max_versions[n],
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
                v_one := es_append_checked(
                    n, p_streams[n], p_min_versions[n], p_max_versions[n],
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

-- One page of the global log (see es_read_all in 20261124000001_event_store.sql); a stream
-- passes the category filter when its id is LIKE one of p_stream_patterns.
CREATE FUNCTION es_read_all_v2(
    p_after_commit    bigint,
    p_after_position  bigint,
    p_limit           integer,
    p_event_types     text[],
    p_stream_patterns text[]
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
          AND (p_stream_patterns IS NULL OR ev.stream_id LIKE ANY (p_stream_patterns))
        ORDER BY ev.transaction_id, ev.position
        LIMIT p_limit
    ) e ON true;
END;
$$;

-- The previous release's kind codes (0 any, 1 no stream, 2 stream exists, 3 exact), for its
-- processes during a rolling deploy. Dropped with the adapters below.
CREATE FUNCTION es_expected_range_of_kind(
    p_kind smallint, p_version bigint, OUT min_version bigint, OUT max_version bigint
) LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_kind WHEN 0 THEN 0 WHEN 1 THEN 0 WHEN 2 THEN 1 ELSE p_version END,
           CASE p_kind WHEN 0 THEN NULL WHEN 1 THEN 0 WHEN 2 THEN NULL ELSE p_version END
$$;

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
) LANGUAGE sql AS $$
    SELECT a.* FROM es_expected_range_of_kind(p_expected_kind, p_expected_version) r,
        LATERAL es_append_v2(p_stream_id, r.min_version, r.max_version, p_event_ids,
                             p_event_types, p_schema_versions, p_payloads, p_metadata,
                             p_notify, true) a
$$;

CREATE OR REPLACE FUNCTION es_append_try(
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
) LANGUAGE sql AS $$
    SELECT a.* FROM es_expected_range_of_kind(p_expected_kind, p_expected_version) r,
        LATERAL es_append_v2(p_stream_id, r.min_version, r.max_version, p_event_ids,
                             p_event_types, p_schema_versions, p_payloads, p_metadata,
                             p_notify, false) a
$$;

CREATE OR REPLACE FUNCTION es_append_group(
    p_streams          text[],
    p_kinds            smallint[],
    p_versions         bigint[],
    p_counts           integer[],
    p_metadata         jsonb[],
    p_event_ids        uuid[],
    p_event_types      text[],
    p_schema_versions  integer[],
    p_payloads         jsonb[]
) RETURNS SETOF es_append_outcome LANGUAGE sql AS $$
    SELECT g.* FROM (
        SELECT array_agg(r.min_version ORDER BY k) AS mins,
               array_agg(r.max_version ORDER BY k) AS maxes
        FROM unnest(p_kinds, p_versions) WITH ORDINALITY AS x(kind, version, k),
             LATERAL es_expected_range_of_kind(x.kind, x.version) r
    ) ranges,
    LATERAL es_append_group_v2(p_streams, ranges.mins, ranges.maxes, p_counts, p_metadata,
                               p_event_ids, p_event_types, p_schema_versions, p_payloads) g
$$;
