"""The one exception type that the CLI turns into a one-line message, and its guard."""


class LocrobError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


def check(condition: bool, owner: str, message: str) -> None:
    """Raise a :class:`LocrobError` naming ``owner`` unless ``condition`` holds."""
    if not condition:
        raise LocrobError(f"{owner}: {message}")


def summary(err: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (that line cut at ``limit`` characters), for a
    one-line report of a failure that is caught and gone past."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:limit] if lines else ''}"
