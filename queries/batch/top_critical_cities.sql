-- W5 batch: the cities with the most critical events.
SELECT city, count(*) AS critical_events
FROM city_events_archive
WHERE severity = 'critical'
GROUP BY city
ORDER BY critical_events DESC, city
LIMIT 5
