"""``python -m acqwriter`` is the ``acqwriter`` command."""

import sys

from acqwriter.cli import main

sys.exit(main())
