"""The ground floor: sparks that render batches, the snapshot store, branches and objects.

Never imports ``imagery``: generators are named by import path plus a JSON config.
"""
