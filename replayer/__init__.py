"""replayer package (see docs/ARCHITECTURE.md)."""
