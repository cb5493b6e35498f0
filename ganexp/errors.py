"""The one error type for bad user input: it names the key, the value and what is allowed."""


class ConfigError(ValueError):
    """A value the user typed (or a file they pointed at) cannot be used.

    Printed as a single line, with no traceback, before any training starts.
    """

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"{key}={value!r}: {allowed}")
