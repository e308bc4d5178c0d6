"""The command-line interface: parse, call :mod:`authsome.api`, render. No logic of its own."""
