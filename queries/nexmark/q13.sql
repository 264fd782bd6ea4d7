-- Nexmark q13, bounded side input join: each bid with the value its
-- auction's key has in a static side input (the lookup table
-- `side_input`; Flink joins it FOR SYSTEM_TIME AS OF a processing time).
SELECT b.auction, b.bidder, b.price, b.date_time, s.value
FROM bid b
JOIN side_input s ON s.key = b.auction % 10000
