-- covid.national_daily: one row per date, cases and deaths summed over the states present that date;
-- new_x and new_x_7d defined as in state_daily, over the national series.
-- Rebuilt from covid.state_daily (about 1,100 dates, milliseconds) in one transaction: readers keep the
-- old rows until it commits.
CREATE TABLE IF NOT EXISTS covid.national_daily (
    date          date   PRIMARY KEY,
    cases         bigint NOT NULL,
    deaths        bigint NOT NULL,
    new_cases     bigint NOT NULL,
    new_deaths    bigint NOT NULL,
    new_cases_7d  double precision NOT NULL,
    new_deaths_7d double precision NOT NULL
);

DELETE FROM covid.national_daily;

INSERT INTO covid.national_daily (date, cases, deaths, new_cases, new_deaths, new_cases_7d, new_deaths_7d)
SELECT date, cases, deaths, new_cases, new_deaths,
       avg(new_cases)  OVER last_7_rows,
       avg(new_deaths) OVER last_7_rows
FROM (
    SELECT date, cases, deaths,
           cases  - coalesce(lag(cases)  OVER by_date, 0) AS new_cases,
           deaths - coalesce(lag(deaths) OVER by_date, 0) AS new_deaths
    FROM (
        SELECT date, sum(cases)::bigint AS cases, sum(deaths)::bigint AS deaths
        FROM covid.state_daily
        GROUP BY date
    ) AS totals
    WINDOW by_date AS (ORDER BY date)
) AS differences
WINDOW last_7_rows AS (ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW);
