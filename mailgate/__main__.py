"""Allow ``python -m mailgate`` so tests and venvs need no console script on PATH."""

from mailgate.cli.main import main

raise SystemExit(main())
