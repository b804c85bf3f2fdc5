"""``python -m sentient_operator.cli``."""

from sentient_operator.cli.main import main

main()
