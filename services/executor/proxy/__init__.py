"""The `run_command` HTTP proxy: the target and request rules and the thread pool
(`forward`), one exchange on its own connection (`exchange`), and the HTTP/1.1 message
shaping (`http`)."""
