-- covid.pcr_state_results: one row per state, its new_results_reported summed over all dates by outcome;
-- positivity = positive / (positive + negative), null when that denominator is 0.
CREATE TABLE IF NOT EXISTS covid.pcr_state_results (
    state        text   PRIMARY KEY,
    positive     bigint NOT NULL,
    negative     bigint NOT NULL,
    inconclusive bigint NOT NULL,
    positivity   double precision
);

DELETE FROM covid.pcr_state_results;

INSERT INTO covid.pcr_state_results (state, positive, negative, inconclusive, positivity)
SELECT state, positive, negative, inconclusive,
       positive::double precision / nullif(positive + negative, 0)
FROM (
    SELECT state,
           coalesce(sum(new_results_reported) FILTER (WHERE lower(overall_outcome) = 'positive'), 0) AS positive,
           coalesce(sum(new_results_reported) FILTER (WHERE lower(overall_outcome) = 'negative'), 0) AS negative,
           coalesce(sum(new_results_reported) FILTER (WHERE lower(overall_outcome) = 'inconclusive'), 0)
               AS inconclusive
    FROM covid.pcr_testing_daily
    GROUP BY state
) AS by_outcome;
