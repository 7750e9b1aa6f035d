"""``python -m lrn`` (and ``torchrun -m lrn train ...``): the ``lrn`` command."""

from lrn.cli import main

raise SystemExit(main())
