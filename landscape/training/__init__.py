"""Training with and without flooding: the planner (sweeps, chunks, resume), the loop (a generator
that writes nothing), recording into run files, flood-level schedules and AdaFlood.
"""
