-- W3: per service and minute, request volume, response times and error rate
-- (percent of responses with status >= 400).
SELECT window_start, window_end, service,
       count(*) AS request_count,
       avg(response_time) AS avg_response_time,
       min(response_time) AS min_response_time,
       max(response_time) AS max_response_time,
       stddev(response_time) AS stddev_response_time,
       count(*) FILTER (WHERE status_code >= 400) AS error_count,
       100.0 * count(*) FILTER (WHERE status_code >= 400) / count(*) AS error_rate
FROM web_logs
GROUP BY TUMBLE(timestamp, INTERVAL '1' MINUTE), service
