-- W4 on seed 003's topics: each metric is windowed on its own topic, per
-- server, in 30-second windows sliding every 10 seconds.
SELECT window_start, window_end, server_id, avg(cpu_pct) AS avg_cpu
FROM cpu_metrics
GROUP BY HOP(ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND), server_id
