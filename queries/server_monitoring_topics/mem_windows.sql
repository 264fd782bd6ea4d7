SELECT window_start, window_end, server_id, avg(mem_pct) AS avg_mem
FROM mem_metrics
GROUP BY HOP(ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND), server_id
