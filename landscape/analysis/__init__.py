"""Analyses of run files (Section 5 of the paper and beyond). They read run files and never write
into them; each writes its own HDF5 result file with the parameters that produced it."""
