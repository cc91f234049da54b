"""The server's routes, one module per area of the site."""
