"""The composition root: builds the node's components, wires them and runs them.

Import by submodule: ``agent`` (the root), ``forward`` (RPC routing, remote reads),
``keyring``, ``records``, ``pools``, ``index``, ``proxy`` (data-plane wiring) and the
pure ``cluster`` view. This face imports nothing, so ``node.agent.cluster`` loads
without the event loop.
"""
