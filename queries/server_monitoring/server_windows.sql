-- W4: per server, 30-second windows sliding every 10 seconds.
SELECT window_start, window_end, server_id,
       avg(cpu_pct) AS avg_cpu,
       avg(mem_pct) AS avg_mem,
       max(net_in) AS max_net_in,
       -- Readings above `disk_io_valid_max` (or negative) are sensor errors
       -- (the Alibaba trace marks them -1 and 101).
       max(disk_io) FILTER (WHERE disk_io BETWEEN 0 AND $disk_io_valid_max) AS max_disk_io,
       count(*) AS samples
FROM server_metrics
GROUP BY HOP(ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND), server_id
