"""`python -m pipeline ...` (also what `torchrun -m pipeline` runs)."""

from pipeline.cli import main

raise SystemExit(main())
