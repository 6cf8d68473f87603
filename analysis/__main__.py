"""`python -m analysis EXPERIMENT_DIR [--rebuild-tables]`: write the experiment's report (see analysis.report).
`python -m analysis compare EXP_A EXP_B ... [--out DIR]`: which answers held across them (analysis.compare).
(An experiment folder that is itself named `compare` is reached as `./compare`.)"""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["compare"]:
        from analysis.compare import main as compare_main

        sys.exit(compare_main(sys.argv[2:]))
    from analysis.report import main

    sys.exit(main())
