"""``python -m ppp_dist`` is the same as ``ppp-dist``."""

import sys

from ppp_dist.cli import main

sys.exit(main())
