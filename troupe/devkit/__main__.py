"""`python -m troupe.devkit`: the same as `troupe-dev`."""

import sys

from troupe.devkit.cli import main

sys.exit(main())
