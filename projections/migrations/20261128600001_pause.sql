-- An operator may pause a projection: its live worker keeps the lease (so no other process
-- takes the projection over) but begins no batch until it is resumed. Rebuilds go on.
ALTER TABLE projection_state ADD COLUMN paused_at timestamptz;
