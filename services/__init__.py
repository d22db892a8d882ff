"""The agent's processes, one package each."""
