-- W5: per city and minute, volume and severity mix.
SELECT window_start, window_end, city,
       count(*) AS event_count,
       count(*) FILTER (WHERE severity = 'critical') AS critical_count,
       count(*) FILTER (WHERE severity = 'high') AS high_count,
       count(DISTINCT event_type) AS event_types
FROM city_events
GROUP BY TUMBLE(timestamp, INTERVAL '1' MINUTE), city
