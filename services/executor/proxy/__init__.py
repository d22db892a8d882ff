"""The `run_command` HTTP proxy: request checks, limits and the exchange (`forward`), and
the HTTP/1.1 framing it speaks (`http`)."""
