"""Built-in datasets, one file each; every public module here registers its entries (trainables.registry)
when the registry is first used. A module body never imports TensorFlow."""
