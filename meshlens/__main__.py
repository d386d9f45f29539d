"""`python -m meshlens` is `meshlens`."""

import sys

from meshlens.cli import main

sys.exit(main())
