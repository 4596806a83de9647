"""``python -m napari_hybridseg``: the command line."""

import sys

from .cli import main

sys.exit(main())
