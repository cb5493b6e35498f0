"""The console commands: ``ganexp`` (train), ``ganexp-sample`` and ``ganexp-eval``."""
