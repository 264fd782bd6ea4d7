-- W5 batch: how long after they happened events were read (seconds).
SELECT count(*) AS events,
       avg(lag_s) AS avg_lag_s,
       min(lag_s) AS min_lag_s,
       approx_percentile_cont(lag_s, 0.5) AS p50_lag_s,
       approx_percentile_cont(lag_s, 0.99) AS p99_lag_s,
       max(lag_s) AS max_lag_s
FROM (
  SELECT date_part('epoch', processed_at) - date_part('epoch', timestamp) AS lag_s
  FROM city_events_archive
)
