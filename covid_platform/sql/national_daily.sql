-- covid.national_daily rebuilt from covid.state_daily (one row per date; ~1,100 dates, so a full
-- rebuild in one transaction costs milliseconds and readers keep the old rows until it commits).
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
