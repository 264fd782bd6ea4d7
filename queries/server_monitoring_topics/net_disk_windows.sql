-- Seed 003's consumer 2: a server's network window with its disk window.
SELECT n.window_start, n.window_end, n.server_id, n.max_net_in, d.max_disk_io
FROM net_windows n
JOIN disk_windows d ON d.server_id = n.server_id AND d.window_start = n.window_start
