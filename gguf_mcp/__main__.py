from gguf_mcp.cli import main

raise SystemExit(main())
