"""How a run uses the machine: devices and processes (sharding,
distributed), device memory, the compile cache, daemon threads.
"""
