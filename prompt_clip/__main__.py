"""`python -m prompt_clip ...` runs the `prompt-clip` command line."""

import sys

from .cli import main

sys.exit(main())
