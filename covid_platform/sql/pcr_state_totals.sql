-- covid.pcr_state_totals: one row per state at its latest date in covid.pcr_testing_daily;
-- total_results = total_results_reported summed over the outcomes reported on that date.
CREATE TABLE IF NOT EXISTS covid.pcr_state_totals (
    state         text   PRIMARY KEY,
    date          date   NOT NULL,
    total_results bigint NOT NULL
);

DELETE FROM covid.pcr_state_totals;

INSERT INTO covid.pcr_state_totals (state, date, total_results)
SELECT p.state, p.date, sum(p.total_results_reported)
FROM covid.pcr_testing_daily AS p
JOIN (SELECT state, max(date) AS date FROM covid.pcr_testing_daily GROUP BY state) AS latest USING (state, date)
GROUP BY p.state, p.date;
