"""node.connect package."""
