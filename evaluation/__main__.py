"""python -m evaluation compare|export (see evaluation.cli)."""
from evaluation.cli import main

raise SystemExit(main())
