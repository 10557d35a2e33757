"""``python -m steadyq`` is the ``steadyq`` command."""

from steadyq.cli import main

main()
