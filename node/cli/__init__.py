"""The ``meshnode`` command: the only code that reads argv or exits.

``node.cli.main`` parses and dispatches; one module per verb group (``cluster``,
``connect``, ``gateway``) and ``table`` for the columns they share.
"""
