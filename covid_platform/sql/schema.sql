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

CREATE TABLE IF NOT EXISTS covid.state_daily (
    state         text   NOT NULL,
    fips          text,
    date          date   NOT NULL,
    cases         bigint NOT NULL,
    deaths        bigint NOT NULL,
    new_cases     bigint NOT NULL,
    new_deaths    bigint NOT NULL,
    new_cases_7d  double precision NOT NULL,
    new_deaths_7d double precision NOT NULL,
    file_id       bigint NOT NULL,  -- the ledger row of the file these values came from
    PRIMARY KEY (state, date)
);

CREATE TABLE IF NOT EXISTS covid.county_daily (
    state      text   NOT NULL,
    county     text   NOT NULL,
    fips       text,
    date       date   NOT NULL,
    cases      bigint NOT NULL,
    deaths     bigint NOT NULL,
    new_cases  bigint NOT NULL,
    new_deaths bigint NOT NULL,
    file_id    bigint NOT NULL,
    PRIMARY KEY (state, county, date)
);

CREATE TABLE IF NOT EXISTS covid.national_daily (
    date          date   PRIMARY KEY,
    cases         bigint NOT NULL,
    deaths        bigint NOT NULL,
    new_cases     bigint NOT NULL,
    new_deaths    bigint NOT NULL,
    new_cases_7d  double precision NOT NULL,
    new_deaths_7d double precision NOT NULL
);
