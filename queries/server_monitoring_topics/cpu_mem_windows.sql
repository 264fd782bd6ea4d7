-- A window join: a server's CPU window with its memory window, emitted once
-- both topics have closed it (seed 003's consumer 1).
SELECT c.window_start, c.window_end, c.server_id, c.avg_cpu, m.avg_mem
FROM cpu_windows c
JOIN mem_windows m ON m.server_id = c.server_id AND m.window_start = c.window_start
