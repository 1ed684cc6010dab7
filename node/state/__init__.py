"""Global state owned by the primary datacenter's servers, replicated everywhere.

Records keyed by (kind, name), stamped by a hybrid logical clock and merged
last-writer-wins; the owner declares its kinds in a ``Schema``, and this package knows
nothing of what the records hold.

Pure: ``hlc``, ``globalstate``, ``statesync`` (the gossip delegate), ``primary``,
``retry``. Drivers (asyncio), imported by explicit submodule: ``replica`` (the node's
copy), ``writer`` (forward or apply), ``replicator`` (pulls).
"""
