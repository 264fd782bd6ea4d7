-- W1 task failures (Google cluster trace 2011, task_events).
-- Per machine and job, 2-minute windows sliding every 30 seconds:
-- how many task events, and how many of them were failures.
-- Event types: 2 EVICT, 3 FAIL, 5 KILL.
SELECT
  window_start,
  window_end,
  machine_id,
  job_id,
  count(*) AS total_events,
  count(*) FILTER (WHERE event_type = 3) AS fail_count,
  count(*) FILTER (WHERE event_type = 2) AS evict_count,
  count(*) FILTER (WHERE event_type = 5) AS kill_count,
  count(*) FILTER (WHERE event_type IN (2, 3, 5)) AS total_fail_count,
  CAST(count(*) FILTER (WHERE event_type IN (2, 3, 5)) AS DOUBLE) / count(*) AS fail_rate
FROM task_events
WHERE machine_id IS NOT NULL AND job_id IS NOT NULL
GROUP BY HOP(time, INTERVAL '30' SECOND, INTERVAL '2' MINUTE), machine_id, job_id
