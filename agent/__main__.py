"""``python -m agent``: the same command line as the ``gate-agent`` script."""

from agent.app.cli import main

raise SystemExit(main())
