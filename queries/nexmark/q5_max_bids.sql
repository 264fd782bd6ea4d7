-- Nexmark q5, step 2: the most bids any auction got in each window (an
-- aggregate per window over q5_bids' results).
SELECT window_start, window_end, max(num) AS maxn
FROM q5_bids
GROUP BY window_start, window_end
