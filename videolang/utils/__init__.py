"""Small helpers shared by every stage (I/O, logging)."""
