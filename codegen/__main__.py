"""`python -m codegen` is the `cellgen` command."""

import sys

from .cli import main

sys.exit(main())
