"""Use cases: the health round, the runbook steps, backup jobs, approvals, snapshots; they combine
the domain's decisions with the adapters."""
