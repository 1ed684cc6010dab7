"""node.proxy package."""
