"""``python -m hwopt.cli``: the same as the ``hwopt`` command."""

import sys

from hwopt.cli import main

sys.exit(main())
