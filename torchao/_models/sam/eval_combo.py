"""``python -m torchao._models.sam.eval_combo``: the SAM eval harness (see ``eval/main.py``)."""

from torchao._models.sam.eval.main import main

if __name__ == "__main__":
    main()
