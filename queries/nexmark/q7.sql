-- Nexmark q7, step 2: the bids at that price, in Flink's form (a bid at
-- exactly a window's end counts for it too): an interval join of the bids
-- with the window results.
SELECT b.auction, b.price, b.bidder, b.date_time
FROM bid b
JOIN q7_max_price m ON b.price = m.maxprice
 AND b.date_time BETWEEN m.window_end - INTERVAL '10' SECOND AND m.window_end
