-- W3 on an Apache access log: the site per minute.
SELECT window_start, window_end,
       count(*) AS requests,
       count(DISTINCT ip) AS unique_ips,
       sum(bytes) AS bytes_sent,
       count(*) FILTER (WHERE status >= 400) AS errors,
       count(*) FILTER (WHERE status >= 500) AS server_errors,
       100.0 * count(*) FILTER (WHERE status >= 400) / count(*) AS error_rate
FROM access_log
GROUP BY TUMBLE(time, INTERVAL '1' MINUTE)
