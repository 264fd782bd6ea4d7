-- W5: high and critical events as they arrive, with how long after they
-- happened the engine read them.
SELECT timestamp, city, event_type, severity, description, processed_at,
       date_part('epoch', processed_at) - date_part('epoch', timestamp) AS processing_lag_s
FROM city_events
WHERE severity IN ('high', 'critical')
