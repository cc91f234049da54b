"""Reading slides: formats, tiles, tissue, artefact QC, a slide's stains, deep zoom."""
