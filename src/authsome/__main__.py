"""``python -m authsome``."""

from authsome.cli.main import main

main()
