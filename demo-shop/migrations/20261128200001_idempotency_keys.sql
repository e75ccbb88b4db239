-- The answers the HTTP API gave to requests carrying an Idempotency-Key: a request sent again
-- with the same key and the same body gets the same answer; with another body, 422.
CREATE TABLE IF NOT EXISTS http_idempotency_keys (
    key          text PRIMARY KEY,
    -- UUID v5 of the method, path and body of the first request with this key.
    fingerprint  uuid NOT NULL,
    -- The answer, once there is one to keep (NULL while the first request is in flight, or
    -- when it failed in a way a retry may fix).
    status       smallint,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
