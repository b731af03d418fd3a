-- What a collaboration's model calls cost, in millionths of a US dollar (from the price
-- table), and the budget in the same unit that ends it when spent.
ALTER TABLE collaborations ADD COLUMN cost_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE collaborations ADD COLUMN cost_budget_micros BIGINT;
