"""`python -m videomolmo ...` (and `torchrun ... -m videomolmo ...`) = the `videomolmo` command."""

from videomolmo.cli import main

if __name__ == "__main__":
    main()
