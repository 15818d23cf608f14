"""`python -m mailgw.cli`: the same as the `mailgwctl` console script."""

import sys

from mailgw.cli.main import main

sys.exit(main())
