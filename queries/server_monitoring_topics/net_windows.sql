SELECT window_start, window_end, server_id, max(net_in) AS max_net_in
FROM net_metrics
GROUP BY HOP(ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND), server_id
