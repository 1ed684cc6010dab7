"""node.gossip package."""
