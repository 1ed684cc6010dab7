"""node.api: Consul's HTTP API over aiohttp.

``app.make_app(agent)`` builds the application (routes per area: agent, catalog, health,
status); ``app.HTTPServer`` runs it. Consul JSON shapes live only in ``codec``, the
error → status table only in ``errors``, blocking-query semantics only in ``blocking``.

This face imports nothing, so ``node.api.codec`` loads without aiohttp; import the
parts by name.
"""
