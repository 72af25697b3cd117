"""`python -m serving` starts the launcher."""

import sys

from serving.launcher import main

sys.exit(main())
