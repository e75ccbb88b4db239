-- Failures carried over from before generations owned them (the lifecycle migration moved
-- them onto their generation's checkpoint) get the blocking dead letter that retry and skip
-- work through; without it a projection stopped before the upgrade could not be resumed.
INSERT INTO projection_dead_letters
    (projection, generation, commit, sequence, event_id, event_type, stream_id, error, blocking)
SELECT c.name, c.generation,
       (c.failure #>> '{position,commit}')::bigint, (c.failure #>> '{position,sequence}')::bigint,
       (c.failure ->> 'event_id')::uuid, coalesce(c.failure ->> 'event_type', ''),
       coalesce(c.failure ->> 'stream_id', ''), coalesce(c.failure ->> 'error', ''), true
FROM projection_checkpoints c
WHERE c.failure IS NOT NULL AND c.failure ->> 'event_id' IS NOT NULL
ON CONFLICT (projection, event_id) DO UPDATE
    SET generation = EXCLUDED.generation, blocking = true, status = 'parked', resolved_at = NULL;
