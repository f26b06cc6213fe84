"""`python -m gateway` is the `venue-gateway` command."""

from gateway.cli import main

raise SystemExit(main())
