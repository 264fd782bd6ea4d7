-- W3: events that arrived after their minute had closed, as alerts instead
-- of silent drops.
SELECT timestamp, service, ip_address, status_code, 'late event' AS alert
FROM web_logs_late
