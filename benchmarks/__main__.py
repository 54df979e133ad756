"""`python -m benchmarks [--quick] [--scenarios ...] [--rounds N]`."""

from .cli import main

raise SystemExit(main())
