-- Nexmark q8 (monitor new users), step 1: the people who registered in each
-- 10-second window.
SELECT id, name, window_start, window_end
FROM person
GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), id, name
