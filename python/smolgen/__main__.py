"""``python -m smolgen``: the same as the ``smolgen`` command."""

import sys

from .cli import main

sys.exit(main())
