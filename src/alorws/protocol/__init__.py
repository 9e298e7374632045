"""Sans-I/O core of the ALOR protocol."""
