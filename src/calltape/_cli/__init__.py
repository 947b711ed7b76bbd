"""The ``calltape`` command's subcommands, one module per family; calltape.cli
parses the command line and imports only the module of the command it runs."""
