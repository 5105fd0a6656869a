"""``python -m runtime`` is the ``immortals`` command."""

from .cli import main

raise SystemExit(main())
