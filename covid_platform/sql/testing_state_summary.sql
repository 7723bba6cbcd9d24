-- covid.testing_state_summary: one row per state at its latest date in covid.testing_daily. Each count is
-- the latest value the state reported on or before that date (an empty cell on its latest date keeps the
-- value before it, as national_daily does, rather than dropping the state from testing_outcome_totals);
-- positivity = positive / (positive + negative) on the latest date that reported both (positivity_date),
-- null where no date did with a denominator above 0: never a ratio of two dates' counts.
CREATE TABLE IF NOT EXISTS covid.testing_state_summary (
    state           text PRIMARY KEY,
    date            date NOT NULL,
    positive        bigint,
    negative        bigint,
    total_tests     bigint,
    positivity      double precision,
    positivity_date date
);
SELECT covid.ensure_column('testing_state_summary', 'positivity_date', 'date');  -- older tables

DELETE FROM covid.testing_state_summary;

INSERT INTO covid.testing_state_summary (state, date, positive, negative, total_tests, positivity, positivity_date)
SELECT state, max(date),
       (array_agg(positive ORDER BY date DESC) FILTER (WHERE positive IS NOT NULL))[1],
       (array_agg(negative ORDER BY date DESC) FILTER (WHERE negative IS NOT NULL))[1],
       (array_agg(total_tests ORDER BY date DESC) FILTER (WHERE total_tests IS NOT NULL))[1],
       (array_agg(positive::double precision / (positive + negative) ORDER BY date DESC)
            FILTER (WHERE positive + negative > 0))[1],
       max(date) FILTER (WHERE positive + negative > 0)
FROM covid.testing_daily
GROUP BY state;
