"""Netbridge: the netmon socket client and the host interface cache."""
