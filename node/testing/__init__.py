"""node.testing package."""
