"""Fault scenarios on the local control plane and the table they print (python -m e2e.chaos)."""
