-- Nexmark q14 (calculation): converted prices in a range, the time of day
-- as a label, and a character count (of the url: the generator's `extra`
-- padding is not kept).
SELECT auction, bidder, 0.908 * price AS price,
       CASE WHEN date_part('hour', date_time) BETWEEN 8 AND 18 THEN 'dayTime'
            WHEN date_part('hour', date_time) <= 6 OR date_part('hour', date_time) >= 20 THEN 'nightTime'
            ELSE 'otherTime'
       END AS bid_time_type,
       date_time,
       length(url) - length(replace(url, 'c', '')) AS c_counts
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000
