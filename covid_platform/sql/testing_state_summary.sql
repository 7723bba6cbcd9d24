-- covid.testing_state_summary: one row per state at its latest date in covid.testing_daily;
-- positivity = positive / (positive + negative), null when that denominator is 0 or null.
CREATE TABLE IF NOT EXISTS covid.testing_state_summary (
    state       text PRIMARY KEY,
    date        date NOT NULL,
    positive    bigint,
    negative    bigint,
    total_tests bigint,
    positivity  double precision
);

DELETE FROM covid.testing_state_summary;

INSERT INTO covid.testing_state_summary (state, date, positive, negative, total_tests, positivity)
SELECT DISTINCT ON (state)
       state, date, positive, negative, total_tests,
       positive::double precision / nullif(positive + negative, 0)
FROM covid.testing_daily
ORDER BY state, date DESC;
