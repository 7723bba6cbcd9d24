-- The covid schema. Idempotent: run on first connection of every process.
CREATE SCHEMA IF NOT EXISTS covid;
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
CREATE INDEX IF NOT EXISTS ingested_files_content ON covid.ingested_files (dataset, sha256);

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
