"""Call state from events: AMI and CEL rows in, call rows out (pure folds and their store)."""
