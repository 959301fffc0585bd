"""The `bench` command line and its reports."""
