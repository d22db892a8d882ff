import sys

from services.tap.main import main

sys.exit(main())
