-- W5: per city and event type, 5-minute counts and the severities seen.
SELECT window_start, window_end, city, event_type,
       count(*) AS event_count,
       array_agg(DISTINCT severity) AS severities
FROM city_events
GROUP BY TUMBLE(timestamp, INTERVAL '5' MINUTE), city, event_type
