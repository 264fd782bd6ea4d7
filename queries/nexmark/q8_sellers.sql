-- Nexmark q8, step 2: the sellers who opened an auction in each window.
SELECT seller, window_start, window_end
FROM auction
GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), seller
