"""The run file: its layout and reader (store), writer, maker, the folders and sweeps that hold
run files (folders), inspection and export.
"""
