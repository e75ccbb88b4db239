-- Projections: their state, checkpoints, document read models and dead letters.

-- One row per projection: which generation of its read model queries read, and its health.
CREATE TABLE projection_state (
    name              text PRIMARY KEY,
    active_generation bigint      NOT NULL,
    status            text        NOT NULL DEFAULT 'running',
    last_error        text,
    error_commit      bigint,
    error_sequence    bigint,
    error_event_id    uuid,
    error_event_type  text,
    error_stream_id   text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The checkpoint of each generation of each projection: the position up to which its read
-- model holds every matching event. Written in the same transaction as the read model, by
-- compare-and-set on the position the batch started from.
CREATE TABLE projection_checkpoints (
    name             text        NOT NULL,
    generation       bigint      NOT NULL,
    version          integer     NOT NULL,
    commit           bigint      NOT NULL,
    sequence         bigint      NOT NULL,
    last_recorded_at timestamptz,
    started_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, generation)
);

-- Document read models: one JSON document per (collection, key), per projection generation.
-- A rebuild writes a new generation while queries keep reading the active one.
CREATE TABLE projection_documents (
    projection text   NOT NULL,
    generation bigint NOT NULL,
    collection text   NOT NULL,
    key        text   NOT NULL,
    doc        jsonb  NOT NULL,
    PRIMARY KEY (projection, generation, collection, key)
);

-- Events a projection could not handle, under the dead-letter policy.
CREATE TABLE projection_dead_letters (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection text        NOT NULL,
    generation bigint      NOT NULL,
    commit     bigint      NOT NULL,
    sequence   bigint      NOT NULL,
    event_id   uuid        NOT NULL,
    event_type text        NOT NULL,
    stream_id  text        NOT NULL,
    error      text        NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projection_dead_letters_projection ON projection_dead_letters (projection, id);
