"""``python -m matsciml`` is the ``matsciml`` command."""
import sys

from matsciml.cli import main

sys.exit(main())
