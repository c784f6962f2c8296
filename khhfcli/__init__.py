"""The `khhf` command line: set-up, operations, the demo, hotline admin."""
