-- Process managers: per-instance state, inputs (events filed by the intake, deadlines) and
-- each manager's intake position in the log.
CREATE TABLE IF NOT EXISTS process_intake (
    process  text PRIMARY KEY,
    commit   bigint NOT NULL,
    sequence bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS process_instances (
    process       text NOT NULL,
    instance      text NOT NULL,
    state         jsonb NOT NULL DEFAULT 'null',
    -- The input the instance is parked at (NULL when it is not parked).
    parked_input  uuid,
    -- When it next has something to do (NULL: nothing pending), kept from its inputs.
    next_at       timestamptz,
    -- Set while an executor holds it.
    claimed_until timestamptz,
    -- Fencing token: bumped by every claim, checked by every write under a claim.
    epoch         bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (process, instance)
);
CREATE INDEX IF NOT EXISTS process_instances_due
    ON process_instances (process, next_at) WHERE parked_input IS NULL AND next_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS process_inputs (
    process  text NOT NULL,
    -- The event's id, or the deadline's.
    input_id uuid NOT NULL,
    instance text NOT NULL,
    seq      bigserial,
    -- The deadline's name (NULL for an event).
    deadline text,
    due_at   timestamptz NOT NULL,
    done     boolean NOT NULL DEFAULT false,
    -- Failures in a row, the last one, and when it may be tried again (its backoff).
    attempts   integer NOT NULL DEFAULT 0,
    last_error text,
    not_before timestamptz,
    PRIMARY KEY (process, input_id)
);
CREATE INDEX IF NOT EXISTS process_inputs_pending
    ON process_inputs (process, instance, seq) WHERE NOT done;
