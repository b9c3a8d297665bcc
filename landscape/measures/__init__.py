"""Every measurement on any model: pure functions over (model or parameters, data, loss) that
write nothing. Nothing here imports the layers above (training, runs, analysis, figures, cli).
"""
