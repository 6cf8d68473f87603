"""Built-in models, one file each; every public module here registers one entry (trainables.registry)
when the registry is first used. A module body never imports TensorFlow: builders import Keras."""
