"""``python -m sentient_operator`` runs the operator."""

import sys

# The operator never uses the `kubernetes` client library, but kopf imports it whenever it is
# installed (for an optional integration): 35 MB of generated models in memory. The operator image
# does not install it; a development environment does (the CLI uses it), so keep the process as
# it runs in the image.
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

from sentient_operator.main import main  # noqa: E402

sys.exit(main())
