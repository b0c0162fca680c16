"""``python -m selectivity.cli``: the ``selectivity`` command."""

from . import main

main()
