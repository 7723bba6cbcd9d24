-- covid.pcr_outcome_totals: one row per overall_outcome, the new_results_reported of every state and
-- date in covid.pcr_testing_daily summed.
CREATE TABLE IF NOT EXISTS covid.pcr_outcome_totals (
    overall_outcome text PRIMARY KEY,
    results         bigint NOT NULL
);

DELETE FROM covid.pcr_outcome_totals;

INSERT INTO covid.pcr_outcome_totals (overall_outcome, results)
SELECT overall_outcome, sum(new_results_reported)
FROM covid.pcr_testing_daily
GROUP BY overall_outcome;
