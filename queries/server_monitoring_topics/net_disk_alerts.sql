-- Every joined window of a server after its first two (warm-up), with seed
-- 003's network and disk alert.
SELECT window_start, window_end, server_id, max_net_in, max_disk_io,
       CASE WHEN max_net_in >= $net_in_threshold AND max_disk_io >= $disk_io_threshold
                 THEN 'Network flood + Disk thrash suspected'
            WHEN max_net_in >= $net_in_threshold THEN 'Possible DDoS'
            WHEN max_disk_io >= $disk_io_threshold THEN 'Disk thrash suspected'
       END AS alert
FROM (
  SELECT *, lag(window_start, 2) OVER (PARTITION BY server_id ORDER BY window_start) AS warm_up_over
  FROM net_disk_windows
)
WHERE warm_up_over IS NOT NULL
