"""Docker fixtures for this directory (harmless if the top-level conftest imports them too)."""

from tests.docker_fixtures import docker_client, standin_image

__all__ = ["docker_client", "standin_image"]
