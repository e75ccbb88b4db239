-- The consumers' inbox: which messages each consumer has applied (its de-duplication), where
-- it resumes on brokers whose position it keeps itself, and the messages it could not apply.

CREATE TABLE IF NOT EXISTS inbox_messages (
    consumer     text        NOT NULL,
    message_id   uuid        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE INDEX IF NOT EXISTS inbox_messages_received ON inbox_messages (consumer, received_at);

CREATE TABLE IF NOT EXISTS inbox_cursors (
    consumer     text   NOT NULL,
    source       text   NOT NULL,
    next_offset  bigint NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (consumer, source)
);

CREATE TABLE IF NOT EXISTS inbox_dead_letters (
    id           bigserial   PRIMARY KEY,
    consumer     text        NOT NULL,
    message_id   uuid,
    body         bytea       NOT NULL,
    error        text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    -- open: set aside; retry: an operator asked for the handler to run again (the live
    -- consumer does it); retried: it ran and committed; skipped: closed without running.
    status       text        NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'retry', 'retried', 'skipped')),
    attempts     integer     NOT NULL DEFAULT 1
);

CREATE INDEX IF NOT EXISTS inbox_dead_letters_consumer ON inbox_dead_letters (consumer, status, id);
