-- W3: a health score per minute from the site's error rate (seed 002).
SELECT window_start, window_end, total_requests, active_services, active_users,
       avg_response_time, error_rate,
       CASE WHEN error_rate < 1 THEN 100
            WHEN error_rate < 5 THEN 80
            WHEN error_rate < 10 THEN 60
            ELSE 40 END AS health_score
FROM site_metrics
