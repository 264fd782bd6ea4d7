-- W5: events that came after the 10-minute watermark, kept and flagged.
SELECT timestamp, city, event_type, severity, processed_at,
       date_part('epoch', processed_at) - date_part('epoch', timestamp) AS processing_lag_s
FROM city_events_late
