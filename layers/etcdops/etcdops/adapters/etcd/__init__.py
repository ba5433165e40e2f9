"""The etcd side: the gRPC client and its protobuf messages, the client factory, the live membership."""
