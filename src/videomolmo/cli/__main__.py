"""`python -m videomolmo.cli ...` = the `videomolmo` command (kept for torchrun's `-m`)."""

from videomolmo.cli import main

if __name__ == "__main__":
    main()
