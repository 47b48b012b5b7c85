"""`python -m HCCFusionLib.cli`."""
import sys

from . import main

sys.exit(main())
