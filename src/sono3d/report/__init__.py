"""HTML reports built from result files only (to come)."""
