"""``python -m napari_hybridseg.cli``."""

import sys

from . import main

sys.exit(main())
