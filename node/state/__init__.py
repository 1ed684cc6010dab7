"""Global state owned by the primary datacenter's servers, replicated everywhere.

Records keyed by (kind, name), stamped by a hybrid logical clock and merged
last-writer-wins; this package knows nothing of what the records hold.
"""
