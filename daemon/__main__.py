"""`python -m daemon` is the same as the `backup-guardian` console script."""

from daemon.cli.main import main

raise SystemExit(main())
