"""debugger package (see docs/ARCHITECTURE.md)."""
