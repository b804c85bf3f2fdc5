"""``python -m sentient_operator`` runs the operator."""

import sys

from sentient_operator.main import main

sys.exit(main())
