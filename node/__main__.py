"""``python -m node`` is the ``meshnode`` command."""

from node.cli.main import main

raise SystemExit(main())
