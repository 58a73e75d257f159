"""The native runtime's client side, in the user's process: the connection to a head and what travels on it."""
