"""``python -m clip2depth ...`` runs the command line (also what ``torchrun -m clip2depth train ...`` starts)."""

import sys

from clip2depth.cli import main

sys.exit(main())
