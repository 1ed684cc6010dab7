"""node.proxy: the data plane — sidecar listeners and the SNI mesh gateway.

Pure: ``sni`` (ClientHello → server name), ``snapshot`` (frozen inputs + ``handle_update``),
``plan`` (``render(snapshot)`` → listener plans, gateway routing, endpoint choice by mode),
``endpoints`` (address and health of a catalog instance), ``gather`` (one proxy's
registration and inputs → its snapshot), ``metrics`` (counters, JSON/Prometheus).
Drivers: ``pollers`` (socket readiness), ``listen`` (listening sockets), ``relay``
(splice with pooled pipes), ``gateway``, ``sidecar``, ``manager`` (reconciles running
listeners against plans), ``health`` (each proxy's listeners check) and ``feed`` (keeps
each local proxy's snapshot current from the catalog, Connect and other datacenters'
blocking reads).

This face imports nothing, so the pure parts load without the event loop; import
each part by name.
"""
