-- The covid schema. Idempotent: run on first connection of a process, unless covid.migrated says this version
-- of this file, roles.sql and the packaged regions has already run (resources/warehouse.py): DDL takes locks
-- that conflict with the runs at work, even where it has nothing to do (ALTER TABLE locks out every reader
-- of its table, CREATE INDEX its writers).
CREATE SCHEMA IF NOT EXISTS covid;
CREATE TABLE IF NOT EXISTS covid.migrated (
    digest        text        PRIMARY KEY,  -- sha256 of schema.sql, roles.sql and regions.csv: one row per version
    roles_granted boolean     NOT NULL,     -- false: roles.sql could not run (no CREATEROLE); run again once they exist
    roles_found   integer     NOT NULL,     -- of covid_loader and covid_reader, how many existed then
    migrated_at   timestamptz NOT NULL DEFAULT now()
);

-- A column made nullable, or added, in a table of an older version, only where it is not yet: an ALTER TABLE,
-- even one with nothing to do, locks its table against readers until the transaction ends.
CREATE OR REPLACE FUNCTION covid.ensure_nullable(tab text, VARIADIC cols text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    col text;
BEGIN
    FOR col IN SELECT attname FROM pg_attribute
               WHERE attrelid = format('covid.%I', tab)::regclass AND attname = ANY (cols) AND attnotnull LOOP
        EXECUTE format('ALTER TABLE covid.%I ALTER COLUMN %I DROP NOT NULL', tab, col);
    END LOOP;
END
$$;
CREATE OR REPLACE FUNCTION covid.ensure_column(tab text, col text, type text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute
                   WHERE attrelid = format('covid.%I', tab)::regclass AND attname = col AND NOT attisdropped) THEN
        EXECUTE format('ALTER TABLE covid.%I ADD COLUMN %I %s', tab, col, type);
    END IF;
END
$$;
-- One unlogged table per file being ingested (covid_staging.file_<file_id>), dropped once merged.
CREATE SCHEMA IF NOT EXISTS covid_staging;

-- The ledger: one row per object version seen in the landing zone.
CREATE TABLE IF NOT EXISTS covid.ingested_files (
    file_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key           text        NOT NULL,
    etag          text        NOT NULL,
    partition_key text        NOT NULL UNIQUE,
    dataset       text        NOT NULL,
    sha256        text,
    bytes         bigint,
    rows          bigint,
    rows_loaded   bigint,
    -- received → staged → loaded, or quarantined / duplicate
    status        text        NOT NULL CHECK (status IN ('received', 'staged', 'loaded', 'quarantined', 'duplicate')),
    reason        text,
    archive_key   text,
    columns       jsonb,
    received_at   timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    run_id        text
);
DO $$
BEGIN  -- not CREATE INDEX IF NOT EXISTS: it locks the ledger's writers out before it finds the index
    IF to_regclass('covid.ingested_files_content') IS NULL THEN
        CREATE INDEX ingested_files_content ON covid.ingested_files (dataset, sha256);
    END IF;
END
$$;

-- Rows set aside from files that loaded: too few to quarantine the file (see max_bad_row_share).
CREATE TABLE IF NOT EXISTS covid.rejected_rows (
    file_id     bigint      NOT NULL REFERENCES covid.ingested_files,
    key         text        NOT NULL,
    line        bigint      NOT NULL,  -- the record's number in the file, the header being line 1
    reason      text        NOT NULL,
    raw_line    text        NOT NULL,  -- the record as CSV (fields re-quoted where needed)
    rejected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, line)
);

-- Clean tables are created from the dataset declarations (lib/merge.py: table_ddl), summary tables by
-- their own SQL files.

-- One geography for every source: the states, DC, the territories, the freely associated states and the
-- jurisdictions sources report apart (New York City, JHU's cruise ships). Loaded on start from
-- covid_platform/reference/regions.csv (engine/regions.py); a clean table's state_fips refers to it.
CREATE TABLE IF NOT EXISTS covid.regions (
    fips        text PRIMARY KEY,  -- state FIPS (2 digits); a city's Census place code (NYC: 3651000); JHU's codes of its cruise ships
    code        text UNIQUE,       -- USPS code (NYC for New York City); none for the cruise ships
    name        text NOT NULL UNIQUE,
    kind        text NOT NULL,     -- state, district, territory, freely associated state, city, cruise ship
    part_of     text,              -- the code of the region it lies in, for a jurisdiction reported apart (NYC: NY); never summed into it
    other_codes text[] NOT NULL DEFAULT '{}'  -- other agencies' codes (CDC: FSM, RMI)
);
-- Every way a file may write a region (a dataset's region_names), normalised as engine/regions.py
-- normalises a file's value: names case-insensitively, codes in upper case, FIPS without leading zeros.
CREATE OR REPLACE VIEW covid.region_keys AS
SELECT 'name'::text AS naming, lower(name) AS key, fips, name FROM covid.regions
UNION ALL SELECT 'code', upper(code), fips, name FROM covid.regions WHERE code IS NOT NULL
UNION ALL SELECT 'code', upper(other), fips, name FROM covid.regions, unnest(other_codes) AS other
UNION ALL SELECT 'fips', ltrim(fips, '0'), fips, name FROM covid.regions;

-- Vintages (engine/history.py). A file's issue time: its object's last-modified time in the landing zone, or
-- when the ledger first saw it if that version's key was already gone. Ledgers older than the column take
-- received_at, the nearest time they kept.
SELECT covid.ensure_column('ingested_files', 'issued_at', 'timestamptz');
-- each gate's result when the file was gated ({name: {passed, blocking, reason}}): what a run of its loaded
-- partition again reports, not gating it again (added 2026-12-07; null for files gated before)
SELECT covid.ensure_column('ingested_files', 'gates', 'jsonb');
UPDATE covid.ingested_files SET issued_at = received_at WHERE issued_at IS NULL;

-- One row per file and clean table: the keys it added, revised (a value differs from the version before it
-- in ledger order) and left unchanged, and its largest revisions of numbers ({region, date, column, old,
-- new}, by absolute change, at most 10).
CREATE TABLE IF NOT EXISTS covid.revisions (
    file_id        bigint NOT NULL REFERENCES covid.ingested_files,
    table_name     text   NOT NULL,
    keys_added     bigint NOT NULL,
    keys_revised   bigint NOT NULL,
    keys_unchanged bigint NOT NULL,
    largest        jsonb  NOT NULL,
    PRIMARY KEY (file_id, table_name)
);

-- Scheduled downloads (`CsvDownload`, assets/pulls.py): per dataset and URL, the version last landed (the
-- server's validators, sent back as If-None-Match / If-Modified-Since, and its sha256 for servers that send
-- none) and when the URL was last checked. Here, beside the ledger, rather than in Dagster's event log: it
-- describes what the landing zone holds, and survives a new or wiped Dagster instance. Written only after the
-- object is landed, so a failed landing is fetched again.
CREATE TABLE IF NOT EXISTS covid.pull_state (
    dataset       text        NOT NULL,
    url           text        NOT NULL,
    etag          text,
    last_modified text,
    sha256        text        NOT NULL,
    key           text        NOT NULL,
    landed_at     timestamptz NOT NULL,
    checked_at    timestamptz NOT NULL,
    PRIMARY KEY (dataset, url)
);
