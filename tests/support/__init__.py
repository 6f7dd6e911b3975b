"""Real local stand-ins shared by several test areas (Azurite, Key Vault wire fake, Event Hub batch recorder)."""
