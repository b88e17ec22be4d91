from chaos_runner.cli import main

raise SystemExit(main())
