"""The simulation and test kit: SIPp parties (desk phones, carrier, callers),
the demo seed, and the harnesses that tests/ and bench/ share."""
