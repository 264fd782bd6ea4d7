-- Every joined window of a server after its first two (warm-up), with seed
-- 003's CPU and memory alert (NULL when no threshold is crossed).
SELECT window_start, window_end, server_id, avg_cpu, avg_mem,
       CASE WHEN avg_cpu >= $cpu_threshold AND avg_mem >= $mem_threshold THEN 'CPU and Memory spike'
            WHEN avg_cpu >= $cpu_threshold THEN 'CPU spike suspected'
            WHEN avg_mem >= $mem_threshold THEN 'Memory saturation suspected'
       END AS alert
FROM (
  SELECT *, lag(window_start, 2) OVER (PARTITION BY server_id ORDER BY window_start) AS warm_up_over
  FROM cpu_mem_windows
)
WHERE warm_up_over IS NOT NULL
