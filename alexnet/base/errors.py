"""The one exception type a user is meant to see: the CLI prints it as a single line and exits 2."""


class AlexNetError(Exception):
    """Bad input or a state the user can fix (unknown model, corrupt file, invalid config...)."""


def one_line(error: BaseException) -> str:
    """`str(error)` with its whitespace (newlines included) collapsed, or the type's name when it says nothing."""
    return " ".join(str(error).split()) or type(error).__name__
