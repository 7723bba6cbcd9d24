-- Two group roles (NOLOGIN) that login users are made members of by an administrator:
--   covid_loader  writes rows in the covid tables;
--   covid_reader  reads them, for reports and dashboards (DATABASE_READ_URL), and can change nothing.
-- The platform's own DATABASE_URL user owns the schemas and runs this after schema.sql, so the default
-- privileges below cover the clean and summary tables it creates later. Idempotent.
-- Roles are cluster-wide: another database on the same server may create them at the same moment, so
-- losing that race (unique_violation when both insert at once, duplicate_object after) is not an error. Without CREATEROLE, creating them raises insufficient_privilege and the
-- platform skips this file with a warning (an administrator creates the two roles; the next start grants).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'covid_loader') THEN
        CREATE ROLE covid_loader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'covid_reader') THEN
        CREATE ROLE covid_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- Reader: SELECT only, on covid (not on covid_staging, which holds unchecked files); no CREATE on the schema.
GRANT USAGE ON SCHEMA covid TO covid_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA covid TO covid_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA covid GRANT SELECT ON TABLES TO covid_reader;

-- Loader: reads and writes rows; creating, altering or dropping tables stays with the owner.
GRANT USAGE ON SCHEMA covid TO covid_loader;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA covid TO covid_loader;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA covid TO covid_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA covid GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO covid_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA covid GRANT USAGE, SELECT ON SEQUENCES TO covid_loader;
