"""`python -m troupe.hardware.hue`: the simulator's command line."""

import sys

from troupe.hardware.hue.cli import main

sys.exit(main())
