"""node.catalog package."""
