import sys

from services.netmon.main import main

sys.exit(main())
