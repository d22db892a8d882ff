import sys

from services.netbridge.main import main

sys.exit(main())
