-- W3 rule on an access log: an address with many requests in a minute from
-- few user agents (a log has no user ids).
SELECT window_start, window_end, ip,
       count(*) AS requests,
       count(DISTINCT agent) AS user_agents
FROM access_log
GROUP BY TUMBLE(time, INTERVAL '1' MINUTE), ip
HAVING count(*) > $busy_min_requests AND count(DISTINCT agent) < $busy_max_agents
