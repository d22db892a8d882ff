from devcloud.cli import main

raise SystemExit(main())
