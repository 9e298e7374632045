"""``python -m alorws``: the command line."""

from .cli import main


raise SystemExit(main())
