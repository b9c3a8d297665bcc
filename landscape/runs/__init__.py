"""The run file: its layout and reader (store), writer, maker, inspection and export.
"""
