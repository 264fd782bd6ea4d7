-- Readings above `disk_io_valid_max` (or negative) are sensor errors.
SELECT window_start, window_end, server_id,
       max(disk_io) FILTER (WHERE disk_io BETWEEN 0 AND $disk_io_valid_max) AS max_disk_io
FROM disk_metrics
GROUP BY HOP(ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND), server_id
