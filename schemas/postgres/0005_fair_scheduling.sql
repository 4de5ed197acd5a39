-- Fair scheduling: the scheduler serves the account with the fewest running builds,
-- then the one it launched a build for least recently. This index answers "when was
-- this account last served" without reading its whole history.
CREATE INDEX deployments_launched ON deployments (account_id, launched_at DESC) WHERE launched_at IS NOT NULL;
-- The API counts an account's waiting builds against its queue cap.
CREATE INDEX deployments_account_waiting ON deployments (account_id) WHERE state = 'QUEUED' AND launched_at IS NULL;
