"""Layer 4: metrics against labels, shape statistics, and surface meshes."""
