-- W2 resource usage (Google cluster trace 2011, seed 001), from Kafka.
-- Per machine and 1-minute window: the CPU and memory requested by its task
-- events, in total and on average per event.
SELECT
  window_start,
  window_end,
  machine_id,
  count(*) AS task_events,
  sum(cpu_request) AS total_cpu_request,
  sum(memory_request) AS total_memory_request,
  avg(cpu_request) AS avg_cpu_request,
  avg(memory_request) AS avg_memory_request
FROM task_events
WHERE machine_id IS NOT NULL
GROUP BY TUMBLE(time, INTERVAL '1' MINUTE), machine_id
