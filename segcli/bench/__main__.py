"""`python -m segcli.bench --child MODULE:FUNCTION SPEC`: the child process of `segcli bench` (segcli.bench.child)."""

import sys

from segcli.bench.child import child_main

sys.exit(child_main(sys.argv[1:]))
