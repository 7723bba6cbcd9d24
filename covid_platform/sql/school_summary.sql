-- covid.school_summary: one row per school from covid.school_cases: total_cases over every report date
-- (the cells the school reported; null if it reported none);
-- cases_last_7d / cases_last_14d over the dates after (the latest date in the table minus 7 / 14 days),
-- null where the school reported none of them (not 0: an empty cell is not reported);
-- school: the name reported on the school's latest date (spellings vary between files).
CREATE TABLE IF NOT EXISTS covid.school_summary (
    school_id      text   PRIMARY KEY,
    school         text,
    total_cases    bigint,
    cases_last_7d  bigint,
    cases_last_14d bigint
);

SELECT covid.ensure_nullable('school_summary', 'total_cases', 'cases_last_7d', 'cases_last_14d');  -- older tables

DELETE FROM covid.school_summary;

INSERT INTO covid.school_summary (school_id, school, total_cases, cases_last_7d, cases_last_14d)
SELECT c.school_id,
       (array_agg(c.school ORDER BY c.date DESC))[1],
       sum(c.new_cases),
       sum(c.new_cases) FILTER (WHERE c.date > latest.date - 7),
       sum(c.new_cases) FILTER (WHERE c.date > latest.date - 14)
FROM covid.school_cases AS c
CROSS JOIN (SELECT max(date) AS date FROM covid.school_cases) AS latest
GROUP BY c.school_id;
