-- Nexmark q11 (user sessions): bids per bidder in sessions closed by 10
-- seconds without a bid.
SELECT bidder, count(*) AS bid_count, window_start, window_end
FROM bid
GROUP BY SESSION(date_time, INTERVAL '10' SECOND), bidder
