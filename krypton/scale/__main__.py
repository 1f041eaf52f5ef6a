"""`python -m krypton.scale batch INPUT --out DIR ...`: the batch command without the `krypton` script."""

import sys

from krypton.scale.cli_batch import main

sys.exit(main())
