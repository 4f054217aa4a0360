"""Would provide the model ``broken``; fails at import, as a plugin with a bad dependency does."""
from __future__ import annotations

raise RuntimeError("simulated import failure in broken plugin")
