-- The lifecycle of a projection under live traffic: failures that belong to a generation,
-- leases bounded in time and fenced by an epoch, one list of dead letters per projection.

-- A failure belongs to the generation whose worker met it: a deposed worker on an old
-- generation can never mark the new one failed.
ALTER TABLE projection_checkpoints ADD COLUMN failure jsonb;
UPDATE projection_checkpoints c
SET failure = jsonb_build_object(
        'position', jsonb_build_object('commit', s.error_commit, 'sequence', s.error_sequence),
        'event_id', s.error_event_id,
        'event_type', s.error_event_type,
        'stream_id', s.error_stream_id,
        'error', s.last_error)
FROM projection_state s
WHERE s.name = c.name AND s.active_generation = c.generation AND s.last_error IS NOT NULL;
ALTER TABLE projection_state
    DROP COLUMN status, DROP COLUMN last_error, DROP COLUMN error_commit,
    DROP COLUMN error_sequence, DROP COLUMN error_event_id, DROP COLUMN error_event_type,
    DROP COLUMN error_stream_id;

-- One worker per projection. A holder renews before `expires_at`; once it has passed, anyone
-- may take the lease, and taking it raises the epoch. Every commit of a live batch checks
-- the epoch it started with (a deposed holder commits nothing), and effects outside the
-- read model are fenced with projection_fence below. Times are the server's clock only.
CREATE TABLE projection_leases (
    name        text        PRIMARY KEY,
    epoch       bigint      NOT NULL,
    holder      text        NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- Whether `p_epoch` is the current epoch of `p_name`'s lease. It locks the lease row until
-- the calling transaction ends, so a takeover waits for that transaction: a write made in
-- the same transaction after this returned true cannot land after another worker took over.
--
--     INSERT INTO outbox (...) SELECT ... WHERE projection_fence('checkout', 7);
CREATE FUNCTION projection_fence(p_name text, p_epoch bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(
        (SELECT l.epoch = p_epoch FROM projection_leases l WHERE l.name = p_name FOR SHARE),
        false)
$$;

-- Dead letters: one row per projection and event, whatever generation met it (a rebuild
-- that meets the same event again updates the row). `blocking` marks the event a projection
-- stopped at under the stop policy (its checkpoint is before it); the others were parked and
-- passed. `status`: parked, retry (asked for; the live worker re-applies it), retried,
-- skipped.
DELETE FROM projection_dead_letters d USING projection_dead_letters newer
WHERE newer.projection = d.projection AND newer.event_id = d.event_id AND newer.id > d.id;
ALTER TABLE projection_dead_letters
    ADD COLUMN blocking   boolean     NOT NULL DEFAULT false,
    ADD COLUMN status     text        NOT NULL DEFAULT 'parked'
        CHECK (status IN ('parked', 'retry', 'retried', 'skipped')),
    ADD COLUMN attempts   integer     NOT NULL DEFAULT 1,
    ADD COLUMN resolved_at timestamptz,
    ADD CONSTRAINT projection_dead_letters_event UNIQUE (projection, event_id);
CREATE INDEX projection_dead_letters_retry ON projection_dead_letters (projection)
    WHERE status = 'retry';
