"""python -m service -> the voip-rooms command line."""

from service.cli import main

raise SystemExit(main())
