"""``python -m node`` is ``spinenode``."""

from __future__ import annotations

from node.cli import main

raise SystemExit(main())
