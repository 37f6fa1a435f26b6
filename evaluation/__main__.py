"""python -m evaluation compare|export|agree (see evaluation.cli)."""
from evaluation.cli import main

raise SystemExit(main())
