"""The fleet's inputs: fleet.toml and devices.csv, .pfx passwords, the vendor's package, the demo fleet."""
