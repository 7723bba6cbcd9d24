-- covid.pcr_smoothed: one row per date, new_results_7d = the mean of the national new_results_reported
-- (all states and outcomes) over the days with reports among the 7 calendar days ending on that date (a day
-- with no report is not reported, not 0, as in every 7-day mean; gaps never stretch the window).
CREATE TABLE IF NOT EXISTS covid.pcr_smoothed (
    date            date PRIMARY KEY,
    new_results_7d  double precision NOT NULL
);

DELETE FROM covid.pcr_smoothed;

INSERT INTO covid.pcr_smoothed (date, new_results_7d)
SELECT date,
       avg(results) OVER (ORDER BY date RANGE BETWEEN interval '6 days' PRECEDING AND CURRENT ROW)
FROM (
    SELECT date, sum(new_results_reported) AS results
    FROM covid.pcr_testing_daily
    GROUP BY date
) AS national;
