-- W5 batch: events per city and severity.
SELECT city, severity, count(*) AS events
FROM city_events_archive
GROUP BY city, severity
ORDER BY city, severity
