"""landscape: flooding (Ishida et al., ICML 2020) and the loss landscape.

Train with and without flooding into HDF5 run files, then analyse them (Section 5 of the paper).
"""

__version__ = "0.1.0"
