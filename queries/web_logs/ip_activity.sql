-- W3: per client address and 5 minutes, how much it asked, as how many
-- users, of which services.
SELECT window_start, window_end, ip_address,
       count(*) AS request_count,
       count(DISTINCT user_id) AS unique_users,
       array_agg(DISTINCT service) AS services_used
FROM web_logs
GROUP BY TUMBLE(timestamp, INTERVAL '5' MINUTE), ip_address
