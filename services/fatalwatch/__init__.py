"""fatalwatch — a supervisord event listener that stops supervisord when a program goes
FATAL, so that Docker restarts the whole agent container instead of leaving a half-dead
agent running.  It speaks supervisord's listener protocol on stdin/stdout."""
