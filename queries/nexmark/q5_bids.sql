-- Nexmark q5 (hot items), step 1: bids per auction in 10-second windows
-- sliding every 2 seconds.
SELECT auction, count(*) AS num, window_start, window_end
FROM bid
GROUP BY HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction
