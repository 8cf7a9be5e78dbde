"""``python -m workers`` is the ``ibkr-workers`` console script."""

import sys

from workers.cli import main

sys.exit(main())
