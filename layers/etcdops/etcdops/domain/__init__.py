"""The domain: the health model, the safety policy, repairs, upgrades, backup manifests and retention,
the compute interface, runbook findings and the named errors. Pure: no I/O, no AWS SDK, no gRPC."""
