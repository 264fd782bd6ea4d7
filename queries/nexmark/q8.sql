-- Nexmark q8, step 3: people who opened an auction in the window they
-- registered in (a window join).
SELECT p.id, p.name, p.window_start
FROM q8_persons p
JOIN q8_sellers s ON p.id = s.seller AND p.window_start = s.window_start
