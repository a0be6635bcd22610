# Sensor drivers. Each has .name and .read() -> float.
