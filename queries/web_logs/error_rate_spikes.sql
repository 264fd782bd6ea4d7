-- W3 rule: a service's error rate up by more than `error_spike_points`
-- percentage points from its previous minute.
SELECT * FROM (
  SELECT window_start, service, error_rate,
         lag(error_rate) OVER w AS previous_error_rate,
         error_rate - lag(error_rate) OVER w AS error_rate_change
  FROM service_metrics
  WINDOW w AS (PARTITION BY service ORDER BY window_start)
)
WHERE error_rate_change > $error_spike_points
