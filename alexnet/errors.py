"""The one exception type a user is meant to see: the CLI prints it as a single line and exits 2."""


class AlexNetError(Exception):
    """Bad input or a state the user can fix (unknown model, corrupt file, invalid config...)."""
