"""`python -m collector` is `meshlens`."""

import sys

from collector.cli import main

sys.exit(main())
