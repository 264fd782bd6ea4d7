-- Nexmark q7 (highest bid), step 1: the highest price of each 10-second window.
SELECT max(price) AS maxprice, window_start, window_end
FROM bid
GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)
