"""node.catalog: the datacenter's catalog of nodes, services and health checks.

Pure: ``values`` (frozen values and their wire forms, whose fields ``wire`` reads),
``parse`` (registrations → values), ``sidecar`` (sidecar expansion and ports), ``store``
(replicated node records with modify indexes) and ``queries`` (the reads behind the
HTTP API).
Drivers: ``sync`` (the gossip delegate that replicates node records across the
datacenter), ``local`` (this node's own registrations and their persistence),
``checks`` (the health check runner) and ``watch`` (the index notifier behind
blocking queries).

This face imports nothing, so the pure parts load without the event loop; import
each part by name.
"""
