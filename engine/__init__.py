"""The training engine: the run's settings (``config``), the recipe built from them (``recipe``), the loop that
trains and evaluates it (``loop``) and where a run starts again (``resume``). ``train_imagenet.py`` runs the
paper's Algorithm 1 over it."""
