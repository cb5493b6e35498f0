"""``python -m ganexp``: the ``ganexp`` command (:mod:`ganexp.cli.train`)."""

from ganexp.cli.train import main

if __name__ == "__main__":
    main()
