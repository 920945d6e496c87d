"""``python -m torch_prune_ext`` runs the command line."""

import sys

from .cli.main import main

sys.exit(main())
