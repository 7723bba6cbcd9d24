-- covid.national_daily: one row per date, cases and deaths summed over the states that reported them that
-- date (an empty count is not reported: it adds nothing, and a total is null when no state reported it), and
-- `states`, how many states have a row that date; new_x and new_x_7d defined as in state_daily, over the
-- national series: new_x is null where x is, else x minus the latest earlier non-null x; new_x_7d is the mean
-- of the non-null new_x of the row and the 6 before.
-- A date is in it once every state still reporting has reported it: up to the earliest latest date of the
-- states whose latest date is within 14 days of the newest. A date one state streamed ahead of the others
-- waits for them (its sum would be that state's alone). A state silent for longer has stopped: it holds the
-- others back no more, and its last counts are part of the totals of every later date (`states` counts the
-- states with a row that date).
-- Rebuilt from covid.state_daily (about 1,100 dates, milliseconds) in one transaction: readers keep the
-- old rows until it commits.
CREATE TABLE IF NOT EXISTS covid.national_daily (
    date          date   PRIMARY KEY,
    cases         bigint,
    deaths        bigint,
    new_cases     bigint,
    new_deaths    bigint,
    new_cases_7d  double precision,
    new_deaths_7d double precision,
    states        integer
);
ALTER TABLE covid.national_daily ALTER COLUMN cases DROP NOT NULL, ALTER COLUMN deaths DROP NOT NULL,
    ALTER COLUMN new_cases DROP NOT NULL, ALTER COLUMN new_deaths DROP NOT NULL,
    ALTER COLUMN new_cases_7d DROP NOT NULL, ALTER COLUMN new_deaths_7d DROP NOT NULL,
    ADD COLUMN IF NOT EXISTS states integer;  -- tables of older versions

-- The national series from the states' rows: the current ones (NULL), or covid.state_daily as of a time
-- (vintages: what national_daily would have held then). One definition for both; inlined by PostgreSQL,
-- so the branch not taken costs nothing.
DROP FUNCTION IF EXISTS covid.national_daily_as_of(timestamptz);
CREATE FUNCTION covid.national_daily_as_of(as_of timestamptz)
RETURNS TABLE (date date, cases bigint, deaths bigint, new_cases bigint, new_deaths bigint,
               new_cases_7d double precision, new_deaths_7d double precision, states integer)
LANGUAGE sql STABLE AS $national$
WITH states AS (
    SELECT state, date, cases, deaths FROM covid.state_daily WHERE $1 IS NULL
    UNION ALL
    SELECT state, date, cases, deaths FROM covid.state_daily_as_of($1) WHERE $1 IS NOT NULL
), latest AS (
    SELECT state, max(date) AS date FROM states GROUP BY state
), stopped AS MATERIALIZED (  -- the last row of each state silent for more than 14 days before the newest date
    SELECT s.date, s.cases, s.deaths FROM states AS s JOIN latest AS l USING (state, date)
    WHERE l.date < (SELECT max(date) FROM latest) - 14
)
SELECT date, cases, deaths, new_cases, new_deaths,
       avg(new_cases)  OVER last_7_rows,
       avg(new_deaths) OVER last_7_rows,
       states
FROM (
    SELECT date, cases, deaths, states,
           cases  - coalesce((max(CASE WHEN cases  IS NOT NULL THEN ARRAY[date - DATE '2000-01-01', cases]  END)
                              OVER before_date)[2], 0) AS new_cases,
           deaths - coalesce((max(CASE WHEN deaths IS NOT NULL THEN ARRAY[date - DATE '2000-01-01', deaths] END)
                              OVER before_date)[2], 0) AS new_deaths
    FROM (
        -- the states' rows of the date, and the last values of the states that stopped before it (null where
        -- neither has a value)
        SELECT r.date, r.states, (SELECT sum(x) FROM (VALUES (r.cases), (c.cases)) AS v (x))::bigint AS cases,
               (SELECT sum(x) FROM (VALUES (r.deaths), (c.deaths)) AS v (x))::bigint AS deaths
        FROM (
            SELECT date, sum(cases) AS cases, sum(deaths) AS deaths, count(*)::integer AS states
            FROM states
            WHERE date <= (SELECT min(date) FROM latest WHERE date >= (SELECT max(date) FROM latest) - 14)
            GROUP BY date
        ) AS r
        LEFT JOIN LATERAL (
            SELECT sum(cases) AS cases, sum(deaths) AS deaths FROM stopped WHERE stopped.date < r.date
        ) AS c ON true
    ) AS totals
    WINDOW before_date AS (ORDER BY date ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
) AS differences
WINDOW last_7_rows AS (ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW)
ORDER BY date
$national$;

DELETE FROM covid.national_daily;

INSERT INTO covid.national_daily (date, cases, deaths, new_cases, new_deaths, new_cases_7d, new_deaths_7d, states)
SELECT * FROM covid.national_daily_as_of(NULL);
