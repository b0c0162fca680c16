"""``python -m selectivity``: the ``selectivity`` command."""

from .cli import main

main()
