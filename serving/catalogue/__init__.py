"""The model catalogue's groundwork: a checkpoint's facts read from its files (facts.py), the
rules it must pass to be served (rules.py) and what a replica of it needs (sizing.py)."""
