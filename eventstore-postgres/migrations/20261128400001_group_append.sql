-- Several appends that arrived together, in one transaction and one round trip: a group
-- commit, so that concurrent writers share one WAL flush.
--
-- Append i writes p_counts[i] events, taken in order from the flattened event arrays, to
-- p_streams[i], checked against its own expected version (p_kinds[i], p_versions[i]; the
-- kinds of es_append) with its own metadata. Each append runs in a block of its own (a
-- subtransaction): a conflict, a clash of event ids or any other error of one append undoes
-- only that append and is reported on its row; the others commit. The stream locks of all
-- appends are taken first, in stream-id order, so that two groups never wait for each other
-- in a cycle (es_append takes one lock only).
--
-- One row per append: i, and
--   'appended'   stream_version, transaction_id, positions, recorded_at describe its events;
--   'conflict'   stream_version is the stream's actual version; nothing stored;
--   'duplicate'  an event id is stored already (the client looks the ids up, as for
--                es_append);
--   'error'      anything else; detail holds SQLSTATE and message (the client runs that
--                append again on its own, so that it fails exactly as it would alone).
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
) RETURNS TABLE (
    i                integer,
    outcome          text,
    stream_version   bigint,
    transaction_id   bigint,
    positions        bigint[],
    recorded_at      timestamptz,
    detail           text
) LANGUAGE plpgsql AS $$
DECLARE
    v_stream  text;
    v_first   integer := 1;
    v_count   integer;
    v_current bigint;
    v_ok      boolean;
BEGIN
    FOR v_stream IN SELECT DISTINCT s FROM unnest(p_streams) AS s ORDER BY s LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('es_stream:' || v_stream, 0));
    END LOOP;

    FOR n IN 1 .. cardinality(p_streams) LOOP
        v_count := p_counts[n];
        BEGIN
            SELECT coalesce(max(e.stream_version), 0) INTO v_current
            FROM es_events e WHERE e.stream_id = p_streams[n];
            v_ok := CASE p_kinds[n]
                        WHEN 0 THEN true
                        WHEN 1 THEN v_current = 0
                        WHEN 2 THEN v_current > 0
                        ELSE v_current = p_versions[n]
                    END;
            IF NOT v_ok THEN
                RETURN QUERY SELECT n, 'conflict'::text, v_current, NULL::bigint,
                                    NULL::bigint[], NULL::timestamptz, NULL::text;
            ELSE
                RETURN QUERY
                WITH inserted AS (
                    INSERT INTO es_events (event_id, stream_id, stream_version, event_type,
                                           schema_version, payload, metadata)
                    SELECT e.id, p_streams[n], v_current + e.k, e.t, e.v, e.p, p_metadata[n]
                    FROM unnest(p_event_ids[v_first : v_first + v_count - 1],
                                p_event_types[v_first : v_first + v_count - 1],
                                p_schema_versions[v_first : v_first + v_count - 1],
                                p_payloads[v_first : v_first + v_count - 1])
                         WITH ORDINALITY AS e(id, t, v, p, k)
                    ORDER BY e.k
                    RETURNING es_events.position, es_events.stream_version
                )
                SELECT n, 'appended'::text, v_current + v_count,
                       pg_current_xact_id()::text::bigint,
                       (SELECT array_agg(x.position ORDER BY x.stream_version) FROM inserted x),
                       now(), NULL::text;
            END IF;
        EXCEPTION
            WHEN unique_violation THEN
                RETURN QUERY SELECT n, 'duplicate'::text, NULL::bigint, NULL::bigint,
                                    NULL::bigint[], NULL::timestamptz, SQLERRM;
            WHEN OTHERS THEN
                RETURN QUERY SELECT n, 'error'::text, NULL::bigint, NULL::bigint,
                                    NULL::bigint[], NULL::timestamptz, SQLSTATE || ': ' || SQLERRM;
        END;
        v_first := v_first + v_count;
    END LOOP;
END;
$$;
