"""``python -m tnpeft.cli``: the ``tnpeft`` command."""

import sys

from tnpeft.cli import main

sys.exit(main())
