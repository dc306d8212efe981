"""The built-in homeserver backends' registrations, one module each (see qa.homeserver.registry)."""
