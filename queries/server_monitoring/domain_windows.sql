-- W4 per failure domain: machines that share one (a power or network
-- domain) fail together, so their load is watched together. The domain of
-- each reading's machine comes from the lookup table `machines`; machines
-- under maintenance, or missing from it, are left out.
SELECT m.failure_domain_1 AS failure_domain,
       window_start, window_end,
       count(DISTINCT u.server_id) AS servers,
       avg(u.cpu_pct) AS avg_cpu,
       max(u.mem_pct) AS max_mem,
       max(m.cpu_num) AS max_cores
FROM server_metrics u
JOIN machines m ON m.machine_id = u.server_id
WHERE m.status = 'USING'
GROUP BY HOP(u.ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND), m.failure_domain_1
