-- DeploySphere metadata. Applied once, in file-name order, at start-up.

CREATE TABLE accounts (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    is_admin    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Tokens are random and high-entropy, so a SHA-256 of the token is enough here.
CREATE TABLE api_tokens (
    token_hash  text PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id          uuid PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (id),
    name        text NOT NULL,
    slug        text NOT NULL UNIQUE,
    git_url     text NOT NULL,
    -- NULL: the default branch of the remote (its HEAD).
    branch      text,
    build       jsonb NOT NULL DEFAULT '{}',
    env         jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_account ON projects (account_id, created_at DESC);

CREATE TABLE deployments (
    id            uuid PRIMARY KEY,
    project_id    uuid NOT NULL REFERENCES projects (id),
    account_id    uuid NOT NULL REFERENCES accounts (id),
    git_ref       text NOT NULL,
    state         text NOT NULL CHECK (state IN ('QUEUED', 'BUILDING', 'UPLOADING', 'READY', 'FAILED', 'CANCELED')),
    commit_sha    text,
    error         text,
    plan          jsonb,
    manifest_key  text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Set when the scheduler hands the deployment to a build task.
    launched_at   timestamptz,
    started_at    timestamptz,
    ready_at      timestamptz,
    finished_at   timestamptz
);
CREATE INDEX deployments_project ON deployments (project_id, created_at DESC);
CREATE INDEX deployments_waiting ON deployments (created_at) WHERE state = 'QUEUED' AND launched_at IS NULL;
CREATE INDEX deployments_live ON deployments (account_id) WHERE state IN ('QUEUED', 'BUILDING', 'UPLOADING') AND launched_at IS NOT NULL;

-- Every state a deployment entered, and when.
CREATE TABLE deployment_transitions (
    deployment_id  uuid NOT NULL REFERENCES deployments (id),
    state          text NOT NULL,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (deployment_id, state)
);

-- The production alias of each project.
CREATE TABLE aliases (
    project_id     uuid PRIMARY KEY REFERENCES projects (id),
    deployment_id  uuid NOT NULL REFERENCES deployments (id),
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
