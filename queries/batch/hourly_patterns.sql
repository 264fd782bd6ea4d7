-- W5 batch: events per hour of the day and type.
SELECT date_part('hour', timestamp) AS hour, event_type, count(*) AS events
FROM city_events_archive
GROUP BY 1, 2
ORDER BY 1, 2
