"""The index blocking queries wait on: the catalog's, plus changes outside the catalog.

Rule: the notifier's index is the store's index plus the number of ``bump()`` calls, so
it only ever grows. A change outside the catalog (global state, gossip membership)
bumps it and wakes blocking queries; a later store change still raises it, since
``IndexNotifier`` ignores indexes it has already seen.
"""

from __future__ import annotations

from node.catalog.store import CatalogStore
from node.catalog.watch import IndexNotifier

__all__ = ["NodeIndex"]


class NodeIndex:
    """Feeds store changes and outside bumps to the notifier."""

    __slots__ = ("_store", "_notifier", "_bumps")

    def __init__(self, store: CatalogStore, notifier: IndexNotifier) -> None:
        self._store = store
        self._notifier = notifier
        self._bumps = 0
        store.set_on_change(self._store_changed)

    def _store_changed(self, index: int) -> None:
        self._notifier.notify(index + self._bumps)

    def bump(self) -> int:
        """Wake blocking queries after a change outside the catalog; the new index (use
        it as the index of the changed state's answers)."""
        self._bumps += 1
        self._notifier.notify(self._store.index + self._bumps)
        return self._notifier.index
