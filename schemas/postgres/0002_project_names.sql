-- A project name is unique within its account, whatever its case.
CREATE UNIQUE INDEX projects_account_name ON projects (account_id, lower(name));
