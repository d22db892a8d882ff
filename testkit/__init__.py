"""The test harness shared by tests/ and bench/: the Docker environment and the runtime
stand-in image, agent processes and the supervisord suite, test LANs, bounded waiting.

Importable without pytest, from the repository root (as tests/ and bench/ are run)."""
