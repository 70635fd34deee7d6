"""One module per ``clip2depth`` subcommand, each with ``add_parser(subparsers)`` and ``run(args)``."""
