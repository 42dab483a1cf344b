"""`python -m vas_jax.cli`: the `vas` command."""

import sys

from . import main

sys.exit(main())
