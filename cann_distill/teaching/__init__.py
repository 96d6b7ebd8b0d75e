"""What the teacher gives the student: targets (cached/online/replay), temperature, the distiller, losses."""
