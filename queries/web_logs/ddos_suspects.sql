-- W3 rule: an address sending many requests in a minute under few user ids.
SELECT window_start, window_end, ip_address,
       count(*) AS request_count,
       count(DISTINCT user_id) AS unique_users,
       'possible DDoS' AS alert
FROM web_logs
GROUP BY TUMBLE(timestamp, INTERVAL '1' MINUTE), ip_address
HAVING count(*) > $ddos_min_requests AND count(DISTINCT user_id) < $ddos_max_users
