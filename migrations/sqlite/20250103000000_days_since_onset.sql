-- What phones match on (PROTOCOL.md §10): each GAEN key's days since the onset of
-- symptoms, computed at upload from the token's `onset` claim (key day minus onset day,
-- clamped to the -14..14 that the OS exposure configurations score). Padding keys copy it
-- from real keys, so it does not tell them apart.
ALTER TABLE gaen_keys ADD COLUMN days_since_onset INTEGER NOT NULL DEFAULT 0;
