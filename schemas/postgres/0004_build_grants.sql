-- One-time grants a build task exchanges for its credentials (POST
-- /v1/build-credentials). Stored as SHA-256. An exchange marks its grant used and
-- stores the next one; a used grant is accepted again only for a short while (the
-- build retrying after a lost answer). A build that ended loses its grants.
CREATE TABLE build_grants (
    token_hash    text PRIMARY KEY,
    deployment_id uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);
CREATE INDEX build_grants_deployment ON build_grants (deployment_id);
