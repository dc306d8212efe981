"""Container images the tests build here (no registry is reachable): the Complement-style Synapse image."""
