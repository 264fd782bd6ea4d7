-- Nexmark q0, pass-through: every bid as it comes (the read/decode cost).
SELECT auction, bidder, price, date_time FROM bid
