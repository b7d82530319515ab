from videolang.cli import main

raise SystemExit(main())
