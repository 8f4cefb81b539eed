"""Echo's clients: the Python `EchoClient` and `echo-client`, and the browser page in `web/`."""
