"""Helpers shared by every test tier, imported as ``from tests.helpers.<module> import ...``.

``poll`` waits for conditions, ``ca`` is the test CA, ``cluster`` runs in-process agents.
"""
