"""`python -m streamproxy`."""

from .cli import main

raise SystemExit(main())
