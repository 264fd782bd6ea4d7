-- Nexmark q2, selection: the bids of some auctions.
SELECT auction, price FROM bid WHERE auction % 123 = 0
