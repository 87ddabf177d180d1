"""``python -m daskgmm``: the ``daskgmm`` command line (see :mod:`daskgmm.cli`)."""

import sys

from daskgmm.cli import main

if __name__ == "__main__":
    sys.exit(main())
