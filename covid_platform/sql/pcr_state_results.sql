-- covid.pcr_state_results: one row per state, its new_results_reported summed over all dates by outcome,
-- null for an outcome the state never reported (not 0); positivity = positive / (positive + negative), null
-- when that denominator is 0 or either outcome is not reported.
CREATE TABLE IF NOT EXISTS covid.pcr_state_results (
    state        text   PRIMARY KEY,
    positive     bigint,
    negative     bigint,
    inconclusive bigint,
    positivity   double precision
);

SELECT covid.ensure_nullable('pcr_state_results', 'positive', 'negative', 'inconclusive');  -- older tables

DELETE FROM covid.pcr_state_results;

INSERT INTO covid.pcr_state_results (state, positive, negative, inconclusive, positivity)
SELECT state, positive, negative, inconclusive,
       positive::double precision / nullif(positive + negative, 0)
FROM (
    SELECT state,
           sum(new_results_reported) FILTER (WHERE lower(overall_outcome) = 'positive') AS positive,
           sum(new_results_reported) FILTER (WHERE lower(overall_outcome) = 'negative') AS negative,
           sum(new_results_reported) FILTER (WHERE lower(overall_outcome) = 'inconclusive') AS inconclusive
    FROM covid.pcr_testing_daily
    GROUP BY state
) AS by_outcome;
