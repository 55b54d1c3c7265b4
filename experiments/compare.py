"""Compare rules: ``python -m experiments.compare DIR [--format md|latex|csv]``.

Reads every ``results.json`` under ``DIR`` and prints the paper-style table (test error
mean ± std over seeds); writes the tables and plots to ``DIR/compare/``. This file is
intentionally kept short; the logic is ``bp_alternatives.compare``.
"""

import sys

from bp_alternatives.compare import main

if __name__ == "__main__":
    sys.exit(main())
