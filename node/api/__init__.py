"""node.api package."""
