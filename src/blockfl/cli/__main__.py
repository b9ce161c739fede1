"""`python -m blockfl.cli`."""

import sys

from blockfl.cli import main

sys.exit(main())
