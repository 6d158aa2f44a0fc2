"""One module per `rig` subcommand."""
