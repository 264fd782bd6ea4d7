-- W3 rule: a minute whose average response time is more than
-- `z_score_limit` standard deviations from the service's previous 10 minutes.
SELECT window_start, service, avg_response_time, baseline, baseline_stddev,
       (avg_response_time - baseline) / baseline_stddev AS z_score
FROM (
  SELECT window_start, service, avg_response_time,
         avg(avg_response_time) OVER previous_10 AS baseline,
         stddev(avg_response_time) OVER previous_10 AS baseline_stddev
  FROM service_metrics
  WINDOW previous_10 AS (PARTITION BY service ORDER BY window_start
                         ROWS BETWEEN 10 PRECEDING AND 1 PRECEDING)
)
WHERE abs((avg_response_time - baseline) / baseline_stddev) > $z_score_limit
