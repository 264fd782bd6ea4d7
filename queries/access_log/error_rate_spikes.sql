-- W3 rule on an access log: the error rate up by more than
-- `error_spike_points` percentage points from the minute before.
SELECT * FROM (
  SELECT window_start, requests, error_rate,
         error_rate - lag(error_rate) OVER (ORDER BY window_start) AS error_rate_change
  FROM access_metrics
)
WHERE error_rate_change > $error_spike_points
