"""The one exception type a user is meant to see: the CLI prints it as a single line and exits 2."""

import re


class AlexNetError(Exception):
    """Bad input or a state the user can fix (unknown model, corrupt file, invalid config...)."""


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def one_line(error: BaseException) -> str:
    """`str(error)` with its whitespace (newlines included) collapsed, or the type's name when it says nothing."""
    text = re.sub(r" ?<[^<>]* object at 0x[0-9a-f]+>", "", " ".join(str(error).split()))  # no memory addresses
    return text or type(error).__name__
