-- Nexmark q5, step 3: the auctions with the most bids of each window (a
-- window join of the two).
SELECT b.auction, b.num, b.window_start
FROM q5_bids b
JOIN q5_max_bids m ON b.window_start = m.window_start AND b.num >= m.maxn
