"""``python -m medlens.cli`` (and ``torchrun -m medlens.cli``): the ``medlens`` command."""

from medlens.cli import main

main()
