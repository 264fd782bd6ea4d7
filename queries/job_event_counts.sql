-- W2 companion: job events per minute and event type (0 SUBMIT, 1 SCHEDULE,
-- 2 EVICT, 3 FAIL, 4 FINISH, 5 KILL), from the job_events topic.
SELECT
  window_start,
  window_end,
  event_type,
  count(*) AS job_events,
  count(DISTINCT job_id) AS jobs
FROM job_events
GROUP BY TUMBLE(time, INTERVAL '1' MINUTE), event_type
