"""One module per `bench` subcommand."""
