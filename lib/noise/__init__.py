"""Learning from noisy labels: PLC (label correction), MCPM (pixel meta-reweighting), OEEM (easy-example mining)."""
