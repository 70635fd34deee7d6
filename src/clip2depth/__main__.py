import sys

from clip2depth.cli import main

sys.exit(main())
