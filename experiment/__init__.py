"""The experiment folder, `<storage-path>/<name>/`: where it lives (storage: local, NFS or a bucket),
who holds it (lock), and what it records about itself (folder: experiment.json, provenance).

The lowest layer: the driver writes through it and `analysis` reads through it, so neither imports the
other for it (docs/design.md, "Layers"). It imports no other package of the project.
"""
