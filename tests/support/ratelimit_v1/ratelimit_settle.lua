-- The rate-limit scripts of the earlier key layout (before the running window sums), frozen
-- here so that tests can run old and new replicas side by side on one Redis. Never edit.
-- Settle one or more admissions at once: free each concurrency slot and refund unused reserved
-- tokens to the bucket that was charged (or charge usage above the reservation to the current
-- bucket). Runs after ratelimit_settles.lua (prepended when the script is loaded).
--
-- KEYS: pairs of (token window, leases), one pair per settle; ARGV: one settle per argument.

settle_all(1, 1)
return 0
