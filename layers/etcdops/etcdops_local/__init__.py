"""The local stack and the ``etcdops`` command line: never shipped in the Lambda layer.

A local etcd cluster as processes, the emulated AWS stack that runs template.yaml and the real
handlers, the local autopilot, the demo, and the CLI. Installed by the project's editable install."""
