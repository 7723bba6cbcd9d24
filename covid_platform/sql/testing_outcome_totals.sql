-- covid.testing_outcome_totals: two rows, positive and negative results summed over
-- covid.testing_state_summary (each state's latest cumulative counts).
CREATE TABLE IF NOT EXISTS covid.testing_outcome_totals (
    outcome text PRIMARY KEY,
    results bigint NOT NULL
);

DELETE FROM covid.testing_outcome_totals;

INSERT INTO covid.testing_outcome_totals (outcome, results)
SELECT 'positive', coalesce(sum(positive), 0) FROM covid.testing_state_summary
UNION ALL
SELECT 'negative', coalesce(sum(negative), 0) FROM covid.testing_state_summary;
