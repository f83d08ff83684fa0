"""Guest conversion inside the converted copy (see convert.py)."""
