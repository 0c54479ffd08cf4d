"""`python -m trainer.slides`: the `pcam-slide` command."""

from trainer.slides import main

main()
