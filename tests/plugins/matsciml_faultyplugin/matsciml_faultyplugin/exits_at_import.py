"""Would provide the model ``exits-at-import``; calls ``sys.exit`` when imported, as some scripts do."""
from __future__ import annotations

import sys

sys.exit("simulated sys.exit at import")
