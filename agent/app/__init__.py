"""The application: configuration, the daemon, the command line, the status server, self-test and
the demo. It wires the core (``agent``), the drivers and the sync layer; nothing imports it."""
