"""Project commands on the app CLI (`faust -A streams.app <command>`)."""
