"""The one error type for problems a user can fix; `core.cli.run` prints it as one line."""


class ShopError(Exception):
    """A problem with the user's input or configuration; the message names the file, key or id at fault."""
