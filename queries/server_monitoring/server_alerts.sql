-- W4: every window of a server after its first two (warm-up), with the
-- threshold alerts of seed 003 (NULL when no threshold is crossed).
SELECT window_start, window_end, server_id, avg_cpu, avg_mem, max_net_in, max_disk_io,
       CASE WHEN avg_cpu >= $cpu_threshold AND avg_mem >= $mem_threshold THEN 'CPU and Memory spike'
            WHEN avg_cpu >= $cpu_threshold THEN 'CPU spike suspected'
            WHEN avg_mem >= $mem_threshold THEN 'Memory saturation suspected'
       END AS cpu_mem_alert,
       CASE WHEN max_net_in >= $net_in_threshold AND max_disk_io >= $disk_io_threshold
                 THEN 'Network flood + Disk thrash suspected'
            WHEN max_net_in >= $net_in_threshold THEN 'Possible DDoS'
            WHEN max_disk_io >= $disk_io_threshold THEN 'Disk thrash suspected'
       END AS net_disk_alert
FROM (
  SELECT *,
         -- A window with two earlier windows of its server is past warm-up.
         lag(window_start, 2) OVER (PARTITION BY server_id ORDER BY window_start) AS warm_up_over
  FROM server_windows
)
WHERE warm_up_over IS NOT NULL
