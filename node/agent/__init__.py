"""The composition root: builds the node's components, wires them and runs them.

Import the drivers by submodule (``node.agent.agent``, ``node.agent.proxy``); this face
imports nothing, so ``node.agent.cluster``'s pure views load without the event loop.
"""
