"""``python -m alorws.sim``: the same as ``alorws sim``."""

from __future__ import annotations

import sys

from .app import main


if __name__ == "__main__":
    sys.exit(main())
