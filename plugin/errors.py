"""The one exception type that the CLI turns into a one-line message."""


class LocrobError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""
