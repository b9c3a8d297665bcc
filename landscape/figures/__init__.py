"""Figures as functions of stored arrays: no torch; one module per figure, style.py for what they share.
"""
