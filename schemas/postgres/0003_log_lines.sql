-- How many log lines a finished build wrote (from its final report): a live viewer
-- gets the final state only after that many lines.
ALTER TABLE deployments ADD COLUMN log_lines bigint;
