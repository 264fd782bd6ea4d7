-- W5: every event with its processing time, for the batch analytics in
-- queries/batch/ (`streamsql query --pipeline city_events <file>`).
SELECT timestamp, city, event_type, severity, description, processed_at
FROM city_events
