"""Consul's DNS interface over the catalog queries.

Pure: ``names`` (question → lookup), ``packet`` (query reading, answer rendering) and
``records`` (catalog values → DNS records). Driver: ``server`` (the UDP and TCP listener,
reads of other datacenters, recursors). This face imports nothing, so loading a pure
module loads no I/O.
"""
