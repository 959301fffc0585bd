"""The one exception the server turns into an HTTP answer."""


class ApiError(Exception):
    """An HTTP error answer: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
