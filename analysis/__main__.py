"""`python -m analysis EXPERIMENT_DIR [--rebuild-tables]`: write the experiment's report (see analysis.report)."""

import sys

from analysis.report import main

if __name__ == "__main__":
    sys.exit(main())
