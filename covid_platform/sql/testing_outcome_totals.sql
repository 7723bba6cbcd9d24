-- covid.testing_outcome_totals: two rows, positive and negative results summed over
-- covid.testing_state_summary (each state's latest reported cumulative counts), over the states that report them:
-- `states` says how many do; `results` is empty (not reported) where none does, never 0.
CREATE TABLE IF NOT EXISTS covid.testing_outcome_totals (
    outcome text PRIMARY KEY,
    results bigint,
    states integer NOT NULL
);
-- tables of older versions (0 where no state reported)
SELECT covid.ensure_nullable('testing_outcome_totals', 'results');
SELECT covid.ensure_column('testing_outcome_totals', 'states', 'integer');

DELETE FROM covid.testing_outcome_totals;

INSERT INTO covid.testing_outcome_totals (outcome, results, states)
SELECT 'positive', sum(positive), count(positive) FROM covid.testing_state_summary
UNION ALL
SELECT 'negative', sum(negative), count(negative) FROM covid.testing_state_summary;
