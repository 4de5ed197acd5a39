-- An explicit promote or rollback pins production: until the user promotes again
-- (with "pin": false), READY deployments of the project no longer move the alias.
ALTER TABLE aliases ADD COLUMN pinned_at timestamptz;
