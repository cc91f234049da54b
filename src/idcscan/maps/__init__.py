"""What a mapped slide becomes: the map, its spatial context and its files."""
