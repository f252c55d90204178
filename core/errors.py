"""Errors both sides raise and the CLI reports, without either side importing the other."""


class BadData(ValueError):
    """Data a scenario points to cannot be used: ``str()`` says which file, line and field, and why.
    The CLI prints it and exits 2, as for a bad scenario (it is one, in effect)."""
