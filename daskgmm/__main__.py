"""``python -m daskgmm``: the ``daskgmm`` command line (see :mod:`daskgmm.cli.main`)."""

import sys

from daskgmm.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
