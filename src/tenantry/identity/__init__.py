"""Identity: users, passwords, sessions and tokens, email flows."""
