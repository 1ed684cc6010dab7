"""``python -m node`` is the ``meshnode`` command."""

from node.cli import main

raise SystemExit(main())
