"""OpenPLC Runtime v4 stand-in: the image the tests run in place of the real runtime."""
