"""``python -m agent_runtime.audit LOG KEYFILE``."""

import sys

from agent_runtime.audit.verify_main import main

sys.exit(main())
