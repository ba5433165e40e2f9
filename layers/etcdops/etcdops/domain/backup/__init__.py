"""What a backup is, independent of where it is stored: manifests, retention, named errors."""
