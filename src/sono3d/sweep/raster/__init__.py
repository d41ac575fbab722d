"""sweep/raster."""
