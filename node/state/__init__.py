"""Global state owned by the primary datacenter's servers, replicated everywhere.

The primary's servers commit every write through their Raft group, whose state machine
applies it in log order; the records it writes are stamped by a hybrid logical clock and
reach every copy, where they merge last-writer-wins. The owner declares its kinds in a
``Schema``, and this package knows nothing of what the records hold.

Pure: ``hlc``, ``globalstate``, ``consensus`` (the replicated state machine),
``statesync`` (the gossip delegate), ``primary``, ``retry``. Drivers (asyncio, threads),
imported by explicit submodule: ``raft`` (the group: one voter, or PySyncObj),
``replica`` (the node's copy), ``writer`` (forward or commit), ``replicator`` (pulls).
"""
