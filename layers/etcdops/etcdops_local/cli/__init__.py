"""The ``etcdops`` command line (entry point: :func:`etcdops_local.cli.main.main`)."""
