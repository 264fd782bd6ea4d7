-- W3: the whole site per minute.
SELECT window_start, window_end,
       count(*) AS total_requests,
       count(DISTINCT service) AS active_services,
       count(DISTINCT user_id) AS active_users,
       avg(response_time) AS avg_response_time,
       100.0 * count(*) FILTER (WHERE status_code >= 400) / count(*) AS error_rate
FROM web_logs
GROUP BY TUMBLE(timestamp, INTERVAL '1' MINUTE)
