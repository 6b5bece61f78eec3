"""``python -m csakd_fast``: the ``csakd-fast`` command."""
import sys

from .cli import main

sys.exit(main())
