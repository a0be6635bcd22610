"""`python -m gateway`: the `headrace` command line."""
import sys

from gateway.tools.cli import main

sys.exit(main())
