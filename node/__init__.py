"""meshnode: a service-mesh node (gossip, catalog, Connect CA, sidecars, mesh gateways)."""

__version__ = "0.1.0"
