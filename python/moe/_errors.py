"""moe.Error: every error of the C++ library, with its stable ID."""


class Error(ValueError):
    """A moe error: ``str(e)`` is the C++ message, ``"[<id>] <text>"``; ``e.id`` the stable ID
    (e.g. ``"moe.router.top_k"``) to match on."""

    def __init__(self, message: str, id: str):
        super().__init__(message)
        self.id = id

    def __reduce__(self):
        return (type(self), (self.args[0], self.id))


def fail(id: str, text: str) -> "Error":
    """The Error for a check made in Python, in the C++ format."""
    return Error(f"[{id}] {text}", id)
