"""``python -m crc_core <command>``: see crc_core/cli/ (train, info, certify, ...)."""

from .cli import main

raise SystemExit(main())
