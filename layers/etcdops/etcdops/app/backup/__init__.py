"""The backup use cases: take, check, encrypt, store, catalogue, verify and prune backups."""
