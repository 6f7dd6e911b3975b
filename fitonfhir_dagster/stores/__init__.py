"""Where state lives: users table, token vault, raw archive. Local defaults, Azure when configured."""
