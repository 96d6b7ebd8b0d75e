"""Where code runs: devices, distributed processes, terminal output."""
