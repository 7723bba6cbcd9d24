-- covid.national_daily: one row per date, cases and deaths summed over the states, each state counted with
-- its latest value reported on or before the date: an empty count, a date a state skipped, a state that
-- stopped reporting all keep its last value (not reported is never zero: a state's empty cell does not make
-- the nation's total fall). A total is null when no state has reported that count yet. `states` is how many
-- states have a row that date. new_x and new_x_7d are defined as in state_daily, over the national series:
-- new_x is null where x is, else x minus the latest earlier non-null x; new_x_7d is the mean of the non-null
-- new_x of the row and the 6 before.
-- A date is in it once every state still reporting has reported it: up to the earliest latest date of the
-- states whose latest date is within 14 days of the states' median latest date (the lower middle one). A date
-- one state streamed ahead of the others waits for them (its sum would be that state's alone), however far
-- ahead it is (a mistyped year or month): the nation moves on with more than half of its states. A state
-- silent for longer than 14 days behind that median has stopped: it holds the others back no more.
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
-- tables of older versions
SELECT covid.ensure_nullable('national_daily', 'cases', 'deaths', 'new_cases', 'new_deaths', 'new_cases_7d', 'new_deaths_7d');
SELECT covid.ensure_column('national_daily', 'states', 'integer');

-- The national series from the states' rows: the current ones (NULL), or covid.state_daily as of a time
-- (vintages: what national_daily would have held then). One definition for both; inlined by PostgreSQL,
-- so the branch not taken costs nothing. Replaced in place (a query that looked it up meanwhile still finds
-- it); dropped first only where an older version's result differs (CREATE OR REPLACE cannot change it).
DO $$
BEGIN
    IF pg_get_function_result(to_regprocedure('covid.national_daily_as_of(timestamptz)')) <> 'TABLE(date date, '
       'cases bigint, deaths bigint, new_cases bigint, new_deaths bigint, new_cases_7d double precision, '
       'new_deaths_7d double precision, states integer)' THEN
        DROP FUNCTION covid.national_daily_as_of(timestamptz);
    END IF;
END
$$;
CREATE OR REPLACE FUNCTION covid.national_daily_as_of(as_of timestamptz)
RETURNS TABLE (date date, cases bigint, deaths bigint, new_cases bigint, new_deaths bigint,
               new_cases_7d double precision, new_deaths_7d double precision, states integer)
LANGUAGE sql STABLE AS $national$
WITH states AS (
    SELECT state, date, cases, deaths FROM covid.state_daily WHERE $1 IS NULL
    UNION ALL
    SELECT state, date, cases, deaths FROM covid.state_daily_as_of($1) WHERE $1 IS NOT NULL
), latest AS (
    SELECT max(date) AS date FROM states GROUP BY state
), dates AS (
    SELECT date, count(*)::integer AS states FROM states
    WHERE date <= (SELECT min(date) FROM latest
                   WHERE date >= (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY date) FROM latest) - 14)
    GROUP BY date
), steps AS (  -- by how much each date moves the states' latest values of each count: the totals' steps
    SELECT date, sum(cases - coalesce(previous_cases[2], 0)) AS cases,
           sum(deaths - coalesce(previous_deaths[2], 0)) AS deaths
    FROM (
        SELECT date, cases, deaths,
               max(CASE WHEN cases  IS NOT NULL THEN ARRAY[date - DATE '2000-01-01', cases]  END) OVER before
                   AS previous_cases,
               max(CASE WHEN deaths IS NOT NULL THEN ARRAY[date - DATE '2000-01-01', deaths] END) OVER before
                   AS previous_deaths
        FROM states
        WINDOW before AS (PARTITION BY state ORDER BY date ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ) AS moves
    GROUP BY date
), totals AS (
    SELECT d.date, d.states, (sum(s.cases) OVER by_date)::bigint AS cases,
           (sum(s.deaths) OVER by_date)::bigint AS deaths
    FROM dates AS d LEFT JOIN steps AS s USING (date)
    WINDOW by_date AS (ORDER BY d.date)
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
    FROM totals
    WINDOW before_date AS (ORDER BY date ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
) AS differences
WINDOW last_7_rows AS (ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW)
ORDER BY date
$national$;

DELETE FROM covid.national_daily;

INSERT INTO covid.national_daily (date, cases, deaths, new_cases, new_deaths, new_cases_7d, new_deaths_7d, states)
SELECT * FROM covid.national_daily_as_of(NULL);
