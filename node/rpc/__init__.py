"""node.rpc package."""
