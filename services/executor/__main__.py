"""executor — every Docker call of the agent (see the package docstring)."""
import sys

from services.executor.main import main

sys.exit(main())
