"""``python -m crc_core <command>``: see crc_core/cli.py (train, info, ...)."""

from .cli import main

raise SystemExit(main())
