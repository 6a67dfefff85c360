"""POST /tools/{name}: the side effects an agent may cause, policy-checked and idempotent."""
