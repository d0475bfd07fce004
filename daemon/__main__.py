"""``python -m kassad.daemon`` is ``kassad``."""

import sys

from .cli import main

sys.exit(main())
