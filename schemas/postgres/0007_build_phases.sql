-- How long each phase of a build took (from its final report), and whether the
-- deployment was asked to build without the build cache.
ALTER TABLE deployments ADD COLUMN phases jsonb;
ALTER TABLE deployments ADD COLUMN no_cache boolean NOT NULL DEFAULT false;
