"""``python -m acqwriter`` is the ``acqwriter`` command."""

import sys

from acqwriter.cli.main import main

sys.exit(main())
