"""Adapters of the measurements to other people's training frameworks, each an optional extra
(`pip install flooding-landscape[lightning]`): importing one without its framework is an error
that says what to install. Nothing here imports the layers above the measurements."""
